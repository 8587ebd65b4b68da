defmodule ElixirScope.BackpressureTest do
  use ExUnit.Case

  alias ElixirScope.Capture.{BackpressureManager, PipelineManager}
  alias ElixirScope.Config.Layer2
  alias ElixirScope.{Debug, HealthCheck, Metrics, PipelineMetrics}
  alias ElixirScope.Storage.DataAccess
  import Bitwise
  import ElixirScope.TestEvents

  defp workers(p), do: PipelineManager.get_pipeline_stats(p).workers

  describe "pressure and scaling rules (guide §2.4)" do
    @bp Layer2.default_config().backpressure
    @bounds %{min_workers: 2, max_workers: 16, target_workers: 4}

    defp rate(buffer, latency \\ 0.0, memory \\ 0.0, errors \\ 0.0),
      do:
        BackpressureManager.pressure(
          %{
            buffer_utilization: buffer,
            latency_p99_ms: latency,
            memory_ratio: memory,
            error_rate: errors
          },
          @bp
        )

    test "pressure levels follow the guide's thresholds" do
      assert rate(0.1) == :normal
      assert rate(0.51) == :elevated
      assert rate(0.1, 21.0) == :elevated
      assert rate(0.81) == :high
      assert rate(0.1, 51.0) == :high
      assert rate(0.1, 0.0, 0.0, 0.2) == :high
      assert rate(0.96) == :critical
      assert rate(0.1, 0.0, 0.91) == :critical
    end

    test "scaling recommendations stay within the worker bounds and the cores" do
      recommend = &BackpressureManager.recommend(&1, &2, @bounds, 32)
      assert recommend.(:critical, 2) == {:scale_up, 4}
      assert recommend.(:critical, 14) == {:scale_up, 2}
      assert recommend.(:critical, 16) == :maintain
      assert recommend.(:high, 2) == {:scale_up, 2}
      assert recommend.(:elevated, 3) == {:scale_up, 1}
      assert recommend.(:elevated, 4) == :maintain
      assert recommend.(:normal, 3) == {:scale_down, 1}
      assert recommend.(:normal, 2) == :maintain
      # Never more workers than cores when scaling up.
      assert BackpressureManager.recommend(:critical, 2, @bounds, 4) == {:scale_up, 2}
      assert BackpressureManager.recommend(:critical, 4, @bounds, 4) == :maintain
      assert BackpressureManager.recommend(:critical, 2, @bounds, 1) == :maintain
      # Not even on the way to target_workers (4 here) on a 2-core machine.
      assert BackpressureManager.recommend(:elevated, 2, @bounds, 2) == :maintain
      assert BackpressureManager.recommend(:elevated, 2, @bounds, 3) == {:scale_up, 1}
    end

    test "thresholds are validated config" do
      assert Layer2.merge(Layer2.default_config(), backpressure: [high_latency_ms: 0]) ==
               {:error,
                {:invalid_config, [:backpressure, :high_latency_ms], :not_a_positive_integer}}

      assert Layer2.merge(Layer2.default_config(), backpressure: [shed_fraction: 1.5]) ==
               {:error, {:invalid_config, [:backpressure, :shed_fraction], :not_a_fraction}}

      assert Layer2.merge(Layer2.default_config(), storage: [max_events: 1 <<< 31]) ==
               {:error, {:invalid_config, [:storage, :max_events], :too_large}}
    end
  end

  test "pressure up: workers scale up and whole processes are shed; down: shedding stops, workers scale down" do
    # A memory limit far below the rings' size makes the pressure critical;
    # raising it makes it normal again.
    p =
      private_pipeline(
        pipeline: [min_workers: 1, max_workers: 6, target_workers: 2],
        backpressure: [
          check_interval_ms: 20,
          memory_limit_mb: 1,
          scale_down_after_checks: 3,
          shed_after_checks: 3
        ]
      )

    eventually(fn -> BackpressureManager.check_pressure(p) == :critical end)
    eventually(fn -> workers(p) == min(6, max(1, System.schedulers_online())) end)
    eventually(fn -> Metrics.Layer2.snapshot(p).shedding == 0.5 end)

    assert {:error, %{pressure: {:error, {:pressure, :critical}}}} =
             HealthCheck.Layer2.check_health(p)

    pids = for _ <- 1..64, do: spawn(fn -> :ok end)

    for round <- 1..10,
        do: ElixirScope.ingest_batch(for(pid <- pids, do: call(pid, [round])), pipeline: p)

    :ok = ElixirScope.flush(5_000, pipeline: p)
    stats = ElixirScope.stats(pipeline: p)
    assert stats.dropped.shed > 0 and stats.stored > 0
    assert stats.ingested == stats.stored + stats.dropped_total + stats.queued
    counts = for pid <- pids, do: length(DataAccess.query_by_pid(pid, pipeline: p))
    assert Enum.all?(counts, &(&1 in [0, 10])), "whole processes kept or shed: #{inspect(counts)}"

    :ok = PipelineManager.update_config(p, backpressure: [memory_limit_mb: 100_000])
    eventually(fn -> BackpressureManager.check_pressure(p) == :normal end)
    eventually(fn -> Metrics.Layer2.snapshot(p).shedding == 0.0 end)
    eventually(fn -> workers(p) == 1 end)
    assert {:ok, _checks} = HealthCheck.Layer2.check_health(p)
    GenServer.stop(p)
    assert HealthCheck.Layer2.check_health(p) == {:error, %{pipeline: {:error, :not_running}}}
  end

  test "shedding starts only after shed_after_checks critical checks in a row" do
    bp = %{shed_after_checks: 3}
    assert BackpressureManager.shedding(:off, :critical, 2, bp) == :off
    assert BackpressureManager.shedding(:off, :critical, 3, bp) == :auto
    assert BackpressureManager.shedding(:off, :high, 9, bp) == :off
    assert BackpressureManager.shedding(:auto, :high, 0, bp) == :auto
    assert BackpressureManager.shedding(:auto, :elevated, 0, bp) == :off
    assert BackpressureManager.shedding(:manual, :normal, 0, bp) == :manual
    assert Layer2.default_config().backpressure.shed_after_checks == 10

    # Critical from the first check (memory far over its limit): no shedding
    # before the streak is long enough.
    p =
      private_pipeline(
        backpressure: [check_interval_ms: 20, memory_limit_mb: 1, shed_after_checks: 15]
      )

    started = System.monotonic_time(:millisecond)
    eventually(fn -> BackpressureManager.check_pressure(p) == :critical end)
    assert Metrics.Layer2.snapshot(p).shedding == 0.0
    eventually(fn -> Metrics.Layer2.snapshot(p).shedding == 0.5 end)
    assert System.monotonic_time(:millisecond) - started >= 14 * 20
  end

  test "rings full for less than the streak (a 300 ms stall) shed nothing" do
    p =
      private_pipeline(
        capture: [ring_size: 64, shards: 2],
        backpressure: [check_interval_ms: 20, shed_after_checks: 30],
        storage: [circuit_breaker_threshold: 1, circuit_breaker_timeout_ms: 300]
      )

    # One failed write opens the breaker: the workers stop for 300 ms while
    # the rings fill (15 critical checks, half the streak), then drain them.
    :ok = ElixirScope.Native.pipeline_inject_fault(PipelineManager.pipeline(p), {:fail, 1})
    me = self()

    poller =
      spawn(fn ->
        poll = fn poll, seen ->
          receive do
            :stop -> send(me, {:seen, seen})
          after
            5 ->
              poll.(poll, [
                {BackpressureManager.check_pressure(p), Metrics.Layer2.snapshot(p).shedding}
                | seen
              ])
          end
        end

        poll.(poll, [])
      end)

    pids = for _ <- 1..8, do: spawn(fn -> :ok end)
    events = for i <- 1..2_000, do: call(Enum.at(pids, rem(i, 8)), [i])
    {:ok, 2_000} = ElixirScope.ingest_batch(events, pipeline: p, on_full: :wait)
    :ok = ElixirScope.flush(5_000, pipeline: p)
    send(poller, :stop)
    assert_receive {:seen, seen}, 5_000
    assert {:critical, 0.0} in seen, "the rings were full at a check: #{inspect(Enum.uniq(seen))}"
    assert Enum.all?(seen, fn {_, shedding} -> shedding == 0.0 end)
    assert ElixirScope.stats(pipeline: p).dropped_total == 0
  end

  test "manual load shedding stays on until disabled and refuses with :load_shed" do
    p = private_pipeline(backpressure: [check_interval_ms: 20])
    :ok = BackpressureManager.enable_load_shedding(p)
    pids = for _ <- 1..64, do: spawn(fn -> :ok end)
    results = for pid <- pids, do: ElixirScope.ingest(call(pid), pipeline: p)
    shed = Enum.count(results, &(&1 == {:error, :load_shed}))
    assert shed > 0 and shed < 64
    Process.sleep(100)

    assert Metrics.Layer2.snapshot(p).shedding == 0.5,
           "normal pressure does not end manual shedding"

    :ok = BackpressureManager.disable_load_shedding(p)
    assert Enum.all?(pids, &match?({:ok, _}, ElixirScope.ingest(call(&1), pipeline: p)))
    :ok = ElixirScope.flush(5_000, pipeline: p)
    assert ElixirScope.stats(pipeline: p).dropped.shed == shed
  end

  test "metrics snapshot has the guide's fields, measured" do
    p = private_pipeline(backpressure: [check_interval_ms: 20])

    {:ok, 2_000} =
      ElixirScope.ingest_batch(for(i <- 1..2_000, do: call(self(), [i])), pipeline: p)

    :ok = ElixirScope.flush(5_000, pipeline: p)

    eventually(fn -> Metrics.Layer2.snapshot(p).events_per_second > 0 end)
    m = Metrics.Layer2.snapshot(p)
    assert %PipelineMetrics{total_workers: 2, pressure: :normal, dropped_events: 0} = m
    assert m.batches_per_second > 0 and m.correlations_per_second > 0
    assert m.processing_latency_p99 >= m.processing_latency_p50
    assert map_size(m.buffer_utilization) == 8
    assert m.memory_usage_mb > m.ets_memory_mb and m.ets_memory_mb > 0
    assert m.correlation_success_rate == 1.0
    assert m.avg_worker_load >= 0.0 and m.avg_worker_load <= 1.0
    assert %{queued_events: 0, stored_events: 2_000, tracked_processes: 1} = m.state_sizes
  end

  test "malformed events are kept as dead letters with their reason, and counted" do
    p = private_pipeline()
    {:error, {:invalid_event, :not_an_event}} = ElixirScope.ingest(:junk, pipeline: p)

    {:error, {:invalid_events, 1, [{1, {:pid, :not_a_local_pid}}]}} =
      ElixirScope.ingest_batch([call(), %{call() | pid: :nobody}], pipeline: p)

    assert [
             %{reason: {:pid, :not_a_local_pid}, event: %ElixirScope.Event{pid: :nobody}},
             %{reason: :not_an_event, event: :junk, at: at}
           ] = Debug.Layer2.dead_letters(10, pipeline: p)

    assert is_integer(at)
    assert Debug.Layer2.dead_letters(1, pipeline: p) |> length() == 1
    assert ElixirScope.stats(pipeline: p).dropped.invalid == 2
    assert %{dead_letters: %{total: 2, evicted: 0}} = Debug.Layer2.get_pipeline_state(pipeline: p)
    assert_raise ArgumentError, fn -> Debug.Layer2.dead_letters(-1) end
  end
end
