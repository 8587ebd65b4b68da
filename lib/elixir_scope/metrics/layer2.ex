defmodule ElixirScope.Metrics.Layer2 do
  @moduledoc """
  Layer 2 metrics, measured natively: counters and log-bucketed latency
  histograms kept by the worker threads (lock-free on the hot path), turned
  into rates and recent percentiles at each pressure check.

  ## `:telemetry` events

  When the host application has `:telemetry` (it is not a dependency),
  each pipeline emits these events; their metadata always carries
  `pipeline:` (the manager's name, or its pid).

  | event | when | measurements | metadata |
  |---|---|---|---|
  | `[:elixir_scope, :layer2, :throughput]` | every `metrics.emit_interval_ms` (default 1000; `0`: never) | `events_per_second`, `batches_per_second` | |
  | `[:elixir_scope, :layer2, :latency]` | same | `p50`, `p95`, `p99`: ring-to-store, ms | |
  | `[:elixir_scope, :layer2, :health]` | same | `buffer_utilization` (fullest shard, 0..1), `correlation_success_rate`, `worker_utilization` (0..1) | |
  | `[:elixir_scope, :layer2, :pressure]` | the pressure level changed | `buffer_utilization`, `latency_p99_ms`, `memory_ratio`, `error_rate` (the check's inputs) | `from`, `to` |
  | `[:elixir_scope, :layer2, :shedding]` | load shedding started or stopped | `fraction` (of processes shed) | `state`: `:started` / `:stopped`, `mode`: `:auto` / `:manual` |
  | `[:elixir_scope, :layer2, :breaker]` | the store's circuit breaker opened or closed | `trips`, `consecutive_failures` | `state`: `:opened` / `:closed` |
  | `[:elixir_scope, :trace, :stop]` | a trace session ended | `events`, `dropped`, `duration_ms` | `reason` (`stopped_because`), `session` |

  Rates and percentiles cover the last ~10 pressure checks, as in
  `snapshot/1`. State changes are seen at the pressure checks
  (`backpressure.check_interval_ms`); a breaker that opened and closed
  between two checks gives both events at the second. `emit_metrics/1`
  emits the three periodic events at once.
  """

  alias ElixirScope.Capture.PipelineManager
  alias ElixirScope.{Native, PipelineMetrics, Telemetry}

  @doc "The pipeline's metrics now (see `ElixirScope.PipelineMetrics`)."
  @spec snapshot(GenServer.server()) :: PipelineMetrics.t()
  def snapshot(server \\ PipelineManager) do
    check = GenServer.call(server, :check_state)
    snapshot_of(check, PipelineManager.pipeline(server))
  end

  @doc """
  Emits the periodic `:telemetry` events (throughput, latency, health) of
  a pipeline now; see the module doc.
  """
  @spec emit_metrics(GenServer.server()) :: :ok
  def emit_metrics(server \\ PipelineManager) do
    GenServer.call(server, :emit_metrics)
  end

  @doc false
  # The periodic events from a pipeline's last check (run by its manager).
  def emit(check, handle, name) do
    m = snapshot_of(check, handle)
    meta = %{pipeline: name}
    ms = fn us -> us / 1000 end

    Telemetry.execute(
      [:elixir_scope, :layer2, :throughput],
      %{events_per_second: m.events_per_second, batches_per_second: m.batches_per_second},
      meta
    )

    Telemetry.execute(
      [:elixir_scope, :layer2, :latency],
      %{
        p50: ms.(m.processing_latency_p50),
        p95: ms.(m.processing_latency_p95),
        p99: ms.(m.processing_latency_p99)
      },
      meta
    )

    Telemetry.execute(
      [:elixir_scope, :layer2, :health],
      %{
        buffer_utilization: Enum.max(Map.values(m.buffer_utilization), fn -> 0.0 end),
        correlation_success_rate: m.correlation_success_rate,
        worker_utilization: m.avg_worker_load
      },
      meta
    )
  end

  @doc false
  # The snapshot from a pipeline's last check and its native handle.
  def snapshot_of(check, handle) do
    stats = Native.pipeline_stats(handle)
    store = Native.pipeline_store(handle)
    store_stats = Native.store_stats(store)
    correlation = Native.correlator_stats(store)
    w = check.window.recent
    per_second = fn n -> if w.elapsed_ns > 0, do: n * 1.0e9 / w.elapsed_ns, else: 0.0 end
    us = fn ns -> div(ns, 1000) end
    busy = if w.elapsed_ns > 0, do: w.busy_ns / w.elapsed_ns, else: 0.0
    mb = fn bytes -> bytes / 1_048_576 end

    %PipelineMetrics{
      events_per_second: per_second.(w.stored),
      batches_per_second: per_second.(w.batches),
      correlations_per_second: per_second.(w.correlated),
      processing_latency_p50: us.(w.latency_ns.p50),
      processing_latency_p95: us.(w.latency_ns.p95),
      processing_latency_p99: us.(w.latency_ns.p99),
      buffer_utilization:
        stats.shard_utilization
        |> Enum.with_index()
        |> Map.new(fn {u, i} -> {"shard_#{i}", u} end),
      dropped_events: stats.dropped_total,
      active_workers: min(stats.workers, ceil(busy)),
      total_workers: stats.workers,
      avg_worker_load: if(stats.workers > 0, do: busy / stats.workers, else: 0.0),
      correlation_success_rate: correlation.success_rate,
      orphaned_events: correlation.orphaned_events,
      memory_usage_mb: mb.(stats.ring_memory_bytes + store_stats.memory_bytes),
      ets_memory_mb: mb.(store_stats.memory_bytes),
      pressure: check.pressure,
      shedding: stats.shedding,
      dropped_by_cause: stats.dropped,
      state_sizes: %{
        queued_events: stats.queued,
        stored_events: store_stats.retained,
        pending_sends: correlation.pending_sends,
        pending_receives: correlation.pending_receives,
        tracked_processes: correlation.tracked_processes
      }
    }
  end
end
