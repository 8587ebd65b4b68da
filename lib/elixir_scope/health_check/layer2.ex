defmodule ElixirScope.HealthCheck.Layer2 do
  @moduledoc """
  Layer 2 health (guide §10.2): each check is `:ok` or `{:error, why}`.

    * `:worker_pool` — at least one worker thread runs;
    * `:buffers` — no shard above `backpressure.emergency_threshold`;
    * `:pressure` — the last check was not `:critical`;
    * `:correlation_state` — the correlator is within `correlation.max_entries`;
    * `:storage` — the store answers, its write path's circuit breaker is
      closed, and it is within `storage.max_events`.
  """

  alias ElixirScope.Capture.PipelineManager
  alias ElixirScope.Native

  @type check :: :ok | {:error, term()}
  @type checks :: %{
          worker_pool: check(),
          buffers: check(),
          pressure: check(),
          correlation_state: check(),
          storage: check()
        }

  @doc """
  `{:ok, checks}` when every check passes, else `{:error, checks}`;
  `{:error, %{pipeline: {:error, :not_running}}}` when there is no pipeline
  manager at `server`.
  """
  @spec check_health(GenServer.server()) ::
          {:ok, checks()} | {:error, checks() | %{pipeline: {:error, :not_running}}}
  def check_health(server \\ PipelineManager) do
    run_checks(server)
  catch
    :exit, _ -> {:error, %{pipeline: {:error, :not_running}}}
  end

  defp run_checks(server) do
    config = PipelineManager.get_config(server)
    handle = PipelineManager.pipeline(server)
    stats = Native.pipeline_stats(handle)
    store = Native.pipeline_store(handle)
    pressure = GenServer.call(server, :pressure)

    checks = %{
      worker_pool: check(stats.workers > 0, :no_workers),
      buffers:
        check(
          stats.buffer_utilization <= config.backpressure.emergency_threshold,
          {:buffer_utilization, stats.buffer_utilization}
        ),
      pressure: check(pressure != :critical, {:pressure, pressure}),
      correlation_state: correlation_check(store, config),
      storage: storage_check(store, config, stats.circuit_breaker)
    }

    if Enum.all?(checks, fn {_, c} -> c == :ok end),
      do: {:ok, checks},
      else: {:error, checks}
  end

  defp check(true, _why), do: :ok
  defp check(false, why), do: {:error, why}

  defp correlation_check(store, config) do
    c = Native.correlator_stats(store)
    entries = c.active_correlations + c.tracked_processes
    check(entries <= config.correlation.max_entries, {:correlation_entries, entries})
  end

  defp storage_check(store, config, breaker) do
    s = Native.store_stats(store)

    cond do
      breaker.state != :closed -> {:error, {:circuit_breaker, breaker.state}}
      s.retained > config.storage.max_events -> {:error, {:retained, s.retained}}
      true -> :ok
    end
  end
end
