defmodule ElixirScope.Metrics.Layer2 do
  @moduledoc """
  Layer 2 metrics, measured natively: counters and log-bucketed latency
  histograms kept by the worker threads (lock-free on the hot path), turned
  into rates and recent percentiles at each pressure check.
  """

  alias ElixirScope.Capture.PipelineManager
  alias ElixirScope.{Native, PipelineMetrics}

  @doc "The pipeline's metrics now (see `ElixirScope.PipelineMetrics`)."
  @spec snapshot(GenServer.server()) :: PipelineMetrics.t()
  def snapshot(server \\ PipelineManager) do
    check = GenServer.call(server, :check_state)
    handle = PipelineManager.pipeline(server)
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
