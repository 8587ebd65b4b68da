defmodule ElixirScope.CapacityPlanning do
  @moduledoc """
  Sizing Layer 2 for a load (guide D.3), from what this node measures.

      ElixirScope.CapacityPlanning.calibrate()
      ElixirScope.CapacityPlanning.calculate_requirements(50_000, retention_seconds: 600)
      # %{min_workers: .., recommended_workers: .., max_events: 30_000_000, memory_mb: ..,
      #   ring_buffer_size: 8192, correlation_ttl_seconds: 20, basis: :measured, calibration: ..}

  The guide's figures (2000 events/s per worker, 1 KB per event) are three
  orders of magnitude off the native pipeline; `calibrate/0` measures this
  node instead: one worker's end-to-end drain rate (ingest, correlate,
  index, store) and the store's bytes per held event, on a private
  pipeline with a synthetic workload of calls, returns and messages. Until
  it has run, `calculate_requirements/2` uses the figures measured on a
  2-core development machine and says so (`basis: :default`).
  """

  import Bitwise

  alias ElixirScope.Capture.PipelineManager

  @calibration {__MODULE__, :calibration}
  # Measured on the 2-core dev machine (bench/drain, bench/pipeline.exs):
  # one worker's end-to-end rate on a mixed workload, and bytes per event.
  @defaults %{drain_per_worker: 2_000_000.0, bytes_per_event: 124.0}

  @type calibration :: %{drain_per_worker: float(), bytes_per_event: float()}

  @type requirements :: %{
          min_workers: pos_integer(),
          recommended_workers: pos_integer(),
          max_events: pos_integer(),
          memory_mb: float(),
          ring_buffer_size: pos_integer(),
          correlation_ttl_seconds: pos_integer(),
          basis: :measured | :default,
          calibration: calibration()
        }

  @doc """
  Runs a short synthetic drain (`events:`, default 200_000) on a private
  pipeline with one worker, and keeps the figures for
  `calculate_requirements/2`. Returns them.
  """
  @spec calibrate(keyword()) :: calibration()
  def calibrate(opts \\ []) do
    n = Keyword.get(opts, :events, 200_000)

    unless is_integer(n) and n >= 10_000,
      do: raise(ArgumentError, "events must be an integer >= 10_000, got: #{inspect(n)}")

    {:ok, p} =
      PipelineManager.start_link(
        store: :private,
        config: [
          pipeline: [min_workers: 1, max_workers: 1, target_workers: 1],
          storage: [max_events: n]
        ]
      )

    try do
      batches = workload(n)
      started = System.monotonic_time(:nanosecond)
      for b <- batches, do: {:ok, _} = ElixirScope.ingest_batch(b, pipeline: p, on_full: :wait)
      :ok = ElixirScope.flush(60_000, pipeline: p)
      took = System.monotonic_time(:nanosecond) - started
      store = ElixirScope.Storage.DataAccess.stats(pipeline: p)

      calibration = %{
        drain_per_worker: n * 1.0e9 / took,
        bytes_per_event: store.memory_bytes / max(store.retained, 1)
      }

      :persistent_term.put(@calibration, calibration)
      calibration
    after
      GenServer.stop(p)
    end
  end

  # Batches of 1000 over 64 processes: call, send, receive, return.
  defp workload(n) do
    pids = List.to_tuple(for _ <- 1..64, do: spawn(fn -> Process.sleep(:infinity) end))

    for b <- 0..(div(n, 1000) - 1) do
      for i <- 0..249, e <- 0..3 do
        {pid, peer} = {elem(pids, rem(i, 64)), elem(pids, rem(i + 1, 64))}
        msg = {:req, b, i}

        case e do
          0 -> {:function_call, pid, __MODULE__, :handle, 1, [msg], nil}
          1 -> {:message_send, pid, nil, nil, nil, msg, peer}
          2 -> {:message_receive, peer, nil, nil, nil, msg, pid}
          3 -> {:function_return, pid, __MODULE__, :handle, 1, :ok, nil}
        end
      end
    end
  end

  @doc """
  What `events_per_second` needs. Options: `retention_seconds:` (how long
  events stay in the store, default 300), `burst_ms:` (how long a burst
  the rings absorb while the workers catch up, default 100).

    * `min_workers` / `recommended_workers` (50% headroom): from the
      per-worker drain rate. Beyond the cores, more workers only contend.
    * `max_events` and `memory_mb`: the store holding `retention_seconds` of
      events, indexes included.
    * `ring_buffer_size`: slots per shard, a power of two, holding
      `burst_ms` of the whole load on one shard (one hot process maps to
      one shard), at least 1024.
    * `correlation_ttl_seconds`: the longest a pending half can wait while
      the correlator's default bound (a million pending entries) still
      holds at this rate, between 10 and 300.
    * `basis`: `:measured` after `calibrate/0`, else `:default`.
  """
  @spec calculate_requirements(pos_integer(), keyword()) :: requirements()
  def calculate_requirements(events_per_second, opts \\ [])

  def calculate_requirements(eps, opts) when is_integer(eps) and eps > 0 do
    retention = positive!(opts, :retention_seconds, 300)
    burst_ms = positive!(opts, :burst_ms, 100)
    {basis, c} = calibration()
    workers = fn rate -> max(1, ceil(rate / c.drain_per_worker)) end
    max_events = eps * retention
    burst = eps * burst_ms / 1000

    %{
      min_workers: workers.(eps),
      recommended_workers: workers.(eps * 1.5),
      max_events: max_events,
      memory_mb: Float.round(max_events * c.bytes_per_event / 1_048_576, 1),
      ring_buffer_size: power_of_two(max(1024, ceil(burst))),
      correlation_ttl_seconds: 1_000_000 |> div(eps) |> max(10) |> min(300),
      basis: basis,
      calibration: c
    }
  end

  def calculate_requirements(eps, _opts),
    do: raise(ArgumentError, "events_per_second must be a positive integer, got: #{inspect(eps)}")

  defp calibration do
    case :persistent_term.get(@calibration, nil) do
      nil -> {:default, @defaults}
      measured -> {:measured, measured}
    end
  end

  defp positive!(opts, key, default) do
    case Keyword.get(opts, key, default) do
      n when is_integer(n) and n > 0 -> n
      other -> raise ArgumentError, "#{key} must be a positive integer, got: #{inspect(other)}"
    end
  end

  defp power_of_two(n), do: min(1 <<< 30, 1 <<< ceil(:math.log2(n)))
end
