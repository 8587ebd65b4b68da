defmodule ElixirScope.DebugViewsTest do
  use ExUnit.Case, async: true

  alias ElixirScope.Capture.PipelineManager
  alias ElixirScope.{Debug, Event, EventCorrelator}
  alias ElixirScope.Storage.DataAccess
  import ElixirScope.TestEvents

  test "dump_correlation_state shows open calls and pending halves; force_cleanup drops them" do
    p = private_pipeline()
    [a, b] = for _ <- 1..2, do: spawn(fn -> :ok end)
    inner = %{call(a) | function: :inner}
    send_ = %Event{type: :message_send, pid: b, data: {:hello, 1}, peer: a}
    {:ok, 4} = ElixirScope.ingest_batch([call(a), inner, call(b), send_], pipeline: p)
    :ok = ElixirScope.flush(5_000, pipeline: p)

    dump = Debug.Layer2.dump_correlation_state(pipeline: p)
    assert dump.open_calls == [{a, 2}, {b, 1}], "deepest first"
    assert %{under_1s: 1, under_10s: 0, under_60s: 0, older: 0} = dump.pending_sends_by_age
    assert dump.pending_receives_by_age.under_1s == 0
    assert dump.tracked_processes == 2 and dump.metrics.pending_sends == 1

    assert {:ok, 0} = EventCorrelator.force_cleanup(pipeline: p, older_than_ms: 60_000)
    assert {:ok, dropped} = EventCorrelator.force_cleanup(pipeline: p)
    assert dropped >= 3
    after_ = Debug.Layer2.dump_correlation_state(pipeline: p)
    assert after_.open_calls == [] and after_.pending_sends_by_age.under_1s == 0
    assert after_.metrics.evicted >= dropped
    assert_raise ArgumentError, fn -> EventCorrelator.force_cleanup(older_than_ms: -1) end
  end

  test "trace_event tells who stored an event, when, and what the correlator did" do
    p = private_pipeline()
    [client, server] = for _ <- 1..2, do: spawn(fn -> :ok end)
    msg = {:req, make_ref()}
    receive_ = %Event{type: :message_receive, pid: server, data: msg, peer: client}
    send_ = %Event{type: :message_send, pid: client, data: msg, peer: server}
    lost = %Event{type: :message_send, pid: client, data: :never_received, peer: server}
    before = System.monotonic_time(:nanosecond)
    {:ok, r} = ElixirScope.ingest(receive_, pipeline: p)
    :ok = ElixirScope.flush(5_000, pipeline: p)
    {:ok, s} = ElixirScope.ingest(send_, pipeline: p)
    {:ok, l} = ElixirScope.ingest(lost, pipeline: p)
    :ok = ElixirScope.flush(5_000, pipeline: p)

    assert {:ok, t} = Debug.Layer2.trace_event(r, pipeline: p)
    assert t.ingestion_time >= before and t.storage_time >= t.ingestion_time
    assert t.processing_worker in Enum.map(Debug.Layer2.worker_stats(pipeline: p), & &1.id)
    assert t.correlation_attempts == [:waited_as_pending, {:patched_later, s}]
    assert %{correlation_id: ^s, confidence: 1.0, links: [receives: ^s]} = t.final_correlations

    assert {:ok, %{correlation_attempts: [matched_at_once: ^r]}} =
             Debug.Layer2.trace_event(s, pipeline: p)

    assert {:ok, %{correlation_attempts: [:waited_as_pending, :still_pending]}} =
             Debug.Layer2.trace_event(l, pipeline: p)

    assert Debug.Layer2.trace_event(10_000_000, pipeline: p) == {:error, :not_found}
    assert_raise ArgumentError, fn -> Debug.Layer2.trace_event(0) end

    :ok = DataAccess.write_batch([call()], pipeline: p)
    [direct] = DataAccess.query_recent(1, pipeline: p)

    assert {:ok, %{processing_worker: :direct, ingestion_time: at, storage_time: stored}} =
             Debug.Layer2.trace_event(direct.event.id, pipeline: p)

    assert at <= stored
  end

  test "check_health and worker_stats under the guide's names" do
    p = private_pipeline()
    {:ok, 10} = ElixirScope.ingest_batch(for(i <- 1..10, do: call(self(), [i])), pipeline: p)
    :ok = ElixirScope.flush(5_000, pipeline: p)
    assert {:ok, %{worker_pool: :ok}} = Debug.Layer2.check_health(pipeline: p)
    workers = Debug.Layer2.worker_stats(pipeline: p)
    assert length(workers) == ElixirScope.stats(pipeline: p).workers
    assert workers |> Enum.map(& &1.events_processed) |> Enum.sum() == 10
  end

  test "backpressure_analysis keeps the checks, what they did, and says what to do" do
    p =
      private_pipeline(
        backpressure: [check_interval_ms: 10, memory_limit_mb: 1, shed_after_checks: 2]
      )

    eventually(fn -> Debug.Layer2.backpressure_analysis(pipeline: p).shedding != [] end)
    a = Debug.Layer2.backpressure_analysis(pipeline: p)
    assert [%{pressure: :critical, inputs: %{memory_ratio: m}} | _] = a.checks
    assert m > 0.9 and length(a.checks) <= 100
    assert hd(a.checks).shedding_ratio == 0.5
    assert [{_, {:pressure, :normal, :critical}}] = a.level_changes
    assert [{_, {:shedding, :started, :auto}}] = a.shedding
    assert a.recommendation =~ "Pressure is critical"
    assert a.recommendation =~ "memory_limit_mb"
    assert a.recommendation =~ "Load shedding is on"

    :ok = PipelineManager.update_config(p, backpressure: [memory_limit_mb: 100_000])

    eventually(fn ->
      Debug.Layer2.backpressure_analysis(pipeline: p).recommendation ==
        "Pressure is normal: no action needed."
    end)

    a = Debug.Layer2.backpressure_analysis(pipeline: p)
    assert {:pressure, :critical, :normal} = a.level_changes |> hd() |> elem(1)
    assert {:shedding, :stopped, :off} = a.shedding |> hd() |> elem(1)
  end
end
