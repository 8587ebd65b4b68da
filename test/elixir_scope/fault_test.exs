defmodule ElixirScope.FaultTest do
  use ExUnit.Case

  alias ElixirScope.Capture.PipelineManager
  alias ElixirScope.{HealthCheck, Native}
  alias ElixirScope.Storage.DataAccess
  import ElixirScope.TestEvents

  defp accounted?(s), do: s.ingested == s.stored + s.dropped_total + s.queued

  test "a flood far beyond what the workers drain: VM alive, memory bounded, every event accounted" do
    p =
      private_pipeline(
        capture: [ring_size: 64, shards: 2],
        pipeline: [min_workers: 1, max_workers: 1, target_workers: 1],
        processing: [batch_size: 8]
      )

    producers =
      for n <- 1..4 do
        Task.async(fn ->
          for b <- 1..100 do
            ElixirScope.ingest_batch(for(i <- 1..1000, do: call(self(), [n, b, i])), pipeline: p)
          end
        end)
      end

    Enum.each(producers, &Task.await(&1, 60_000))
    :ok = ElixirScope.flush(10_000, pipeline: p)
    s = ElixirScope.stats(pipeline: p)
    assert s.ingested == 400_000
    assert accounted?(s) and s.queued == 0
    assert s.dropped.buffer_full > 0
    # Rings are fixed; the store holds what was stored.
    assert s.memory_bytes < 200 * 1_048_576
    # Far beyond what the worker drained.
    assert s.dropped.buffer_full > s.stored
  end

  test "killing the PipelineManager mid-stream loses no stored event and ingest resumes" do
    name = :fault_test_pipeline
    start_supervised!({PipelineManager, name: name, store: :private})
    handle = PipelineManager.pipeline(name)

    producer =
      Task.async(fn ->
        for i <- 1..200 do
          {:ok, _} = ElixirScope.ingest(call(self(), [i]), pipeline: name)
          if rem(i, 50) == 0, do: Process.sleep(5)
        end

        self()
      end)

    Process.sleep(5)
    old = Process.whereis(name)
    Process.exit(old, :kill)
    producer_pid = Task.await(producer, 10_000)
    eventually(fn -> Process.whereis(name) not in [nil, old] end, 500)
    assert PipelineManager.pipeline(name) == handle, "reattached to the running pipeline"

    {:ok, id} = ElixirScope.ingest(call(self(), [:after]), pipeline: name)
    :ok = ElixirScope.flush(5_000, pipeline: name)
    assert length(DataAccess.query_by_pid(producer_pid, pipeline: name, limit: :infinity)) == 200
    assert {:ok, _} = DataAccess.get_event(id, pipeline: name)
    assert accounted?(ElixirScope.stats(pipeline: name))
  end

  test "an injected worker panic loses nothing and stores nothing twice" do
    p = private_pipeline()
    handle = PipelineManager.pipeline(p)
    :ok = Native.pipeline_inject_fault(handle, {:panic_at, 1, 0})
    {:ok, 1000} = ElixirScope.ingest_batch(for(i <- 1..1000, do: call(self(), [i])), pipeline: p)
    :ok = ElixirScope.flush(5_000, pipeline: p)
    stats = Native.pipeline_stats(handle)
    assert stats.worker_panics == 1
    assert {stats.stored, stats.dropped.worker_crash} == {1000, 0}
    stored = DataAccess.query_by_pid(self(), pipeline: p, limit: :infinity, order: :asc)
    assert Enum.map(stored, & &1.event.data) == for(i <- 1..1000, do: [i])
    assert_raise ArgumentError, fn -> Native.pipeline_inject_fault(handle, {:nope, 1}) end
  end

  test "failing store writes open the breaker; it half-opens, closes, and every count adds up" do
    p =
      private_pipeline(
        storage: [circuit_breaker_threshold: 3, circuit_breaker_timeout_ms: 100],
        backpressure: [check_interval_ms: 20]
      )

    handle = PipelineManager.pipeline(p)
    # Three failures open it; each of the next two probes fails and reopens it.
    :ok = Native.pipeline_inject_fault(handle, {:fail, 5})
    {:ok, 500} = ElixirScope.ingest_batch(for(i <- 1..500, do: call(self(), [i])), pipeline: p)

    eventually(fn -> Native.pipeline_stats(handle).circuit_breaker.state == :open end, 500)
    open = ElixirScope.stats(pipeline: p)
    assert open.stored == 0 and open.queued == 500 and accounted?(open)

    assert {:error, %{storage: {:error, {:circuit_breaker, state}}}} =
             HealthCheck.Layer2.check_health(p)

    assert state in [:open, :half_open]

    :ok = ElixirScope.flush(5_000, pipeline: p)
    breaker = Native.pipeline_stats(handle).circuit_breaker
    assert breaker == %{state: :closed, consecutive_failures: 0, trips: 3}
    done = ElixirScope.stats(pipeline: p)
    assert done.stored == 500 and done.dropped_total == 0 and accounted?(done)
    assert {:ok, _} = HealthCheck.Layer2.check_health(p)
  end
end
