defmodule ElixirScope.PipelineMetrics do
  @moduledoc """
  A pipeline's metrics (guide §4.3), from `ElixirScope.Metrics.Layer2.snapshot/1`.

  Rates and latency percentiles cover the last ~10 pressure checks (about a
  second at the default `check_interval_ms`); latencies are ring-to-store,
  in microseconds. `ets_memory_mb` is the native store's memory (it takes
  the place of the guide's ETS tables). Beyond the guide: the current
  `pressure`, the share of processes `shedding` (0.0 when off),
  `dropped_by_cause` and `state_sizes` (events queued in the rings and
  retained in the store, and the correlator's pending halves and tracked
  processes).
  """

  @enforce_keys [
    :events_per_second,
    :batches_per_second,
    :correlations_per_second,
    :processing_latency_p50,
    :processing_latency_p95,
    :processing_latency_p99,
    :buffer_utilization,
    :dropped_events,
    :active_workers,
    :total_workers,
    :avg_worker_load,
    :correlation_success_rate,
    :orphaned_events,
    :memory_usage_mb,
    :ets_memory_mb,
    :pressure,
    :shedding,
    :dropped_by_cause,
    :state_sizes
  ]
  defstruct @enforce_keys

  @type t :: %__MODULE__{
          events_per_second: float(),
          batches_per_second: float(),
          correlations_per_second: float(),
          processing_latency_p50: non_neg_integer(),
          processing_latency_p95: non_neg_integer(),
          processing_latency_p99: non_neg_integer(),
          buffer_utilization: %{binary() => float()},
          dropped_events: non_neg_integer(),
          active_workers: non_neg_integer(),
          total_workers: non_neg_integer(),
          avg_worker_load: float(),
          correlation_success_rate: float(),
          orphaned_events: non_neg_integer(),
          memory_usage_mb: float(),
          ets_memory_mb: float(),
          pressure: ElixirScope.Capture.BackpressureManager.pressure(),
          shedding: float(),
          dropped_by_cause: %{atom() => non_neg_integer()},
          state_sizes: %{
            queued_events: non_neg_integer(),
            stored_events: non_neg_integer(),
            pending_sends: non_neg_integer(),
            pending_receives: non_neg_integer(),
            tracked_processes: non_neg_integer()
          }
        }
end
