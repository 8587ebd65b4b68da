defmodule ElixirScope.IngestWaitTest do
  use ExUnit.Case, async: true

  alias ElixirScope.Capture.{BackpressureManager, PipelineManager}
  alias ElixirScope.Native
  alias ElixirScope.Storage.DataAccess
  import ElixirScope.TestEvents

  # Rings far smaller than what is ingested: every burst overflows them.
  @tiny [capture: [ring_size: 64, shards: 2], processing: [batch_size: 16]]

  test "on_full: :wait loses nothing where :drop drops, and keeps per-process order" do
    p = private_pipeline(@tiny)
    pids = for _ <- 1..4, do: spawn(fn -> :ok end)
    events = for i <- 1..20_000, do: call(Enum.at(pids, rem(i, 4)), [i])

    assert {:ok, 20_000} = ElixirScope.ingest_batch(events, pipeline: p, on_full: :wait)

    for i <- 1..200,
        do: {:ok, _} = ElixirScope.ingest(call(self(), [-i]), pipeline: p, on_full: :wait)

    :ok = ElixirScope.flush(10_000, pipeline: p)
    s = ElixirScope.stats(pipeline: p)
    assert {s.stored, s.dropped_total} == {20_200, 0}

    for pid <- pids do
      seqs =
        for e <- DataAccess.query_by_pid(pid, pipeline: p, limit: :infinity), do: hd(e.event.data)

      assert length(seqs) == 5_000 and seqs == Enum.sort(seqs)
    end

    # The same burst under the default policy overflows the rings.
    {:ok, queued} = ElixirScope.ingest_batch(events, pipeline: p)
    :ok = ElixirScope.flush(10_000, pipeline: p)
    assert queued < 20_000
    assert ElixirScope.stats(pipeline: p).dropped.buffer_full == 20_000 - queued
  end

  test "invalid events are reported with their indexes across waits" do
    p = private_pipeline(@tiny)
    events = for i <- 0..4_999, do: if(rem(i, 1000) == 999, do: :junk, else: call(self(), [i]))

    assert {:error, {:invalid_events, 4_995, bad}} =
             ElixirScope.ingest_batch(events, pipeline: p, on_full: :wait)

    assert Enum.map(bad, &elem(&1, 0)) == [999, 1999, 2999, 3999, 4999]
  end

  test "a wait that finds no room gives up after its timeout with what it queued" do
    p = private_pipeline(@tiny ++ [storage: [circuit_breaker_threshold: 1]])
    # Store writes fail: the breaker opens and the rings stay full.
    :ok = Native.pipeline_inject_fault(PipelineManager.pipeline(p), {:fail, 1_000})
    events = for i <- 1..1_000, do: call(self(), [i])
    started = System.monotonic_time(:millisecond)

    assert {:error, {:timeout, queued}} =
             ElixirScope.ingest_batch(events, pipeline: p, on_full: :wait, timeout: 150)

    waited = System.monotonic_time(:millisecond) - started
    assert queued > 0 and queued < 1_000
    assert waited >= 150 and waited < 5_000

    assert {:error, {:timeout, 0}} =
             ElixirScope.ingest(call(), pipeline: p, on_full: :wait, timeout: 0)

    assert ElixirScope.stats(pipeline: p).dropped.buffer_full == 0, "waiting is not dropping"
  end

  test "events ingested with :wait are never shed" do
    p = private_pipeline()
    :ok = BackpressureManager.enable_load_shedding(p)
    pids = for _ <- 1..64, do: spawn(fn -> :ok end)

    assert Enum.all?(
             pids,
             &match?({:ok, _}, ElixirScope.ingest(call(&1), pipeline: p, on_full: :wait))
           )

    assert {:ok, 64} =
             ElixirScope.ingest_batch(Enum.map(pids, &call/1), pipeline: p, on_full: :wait)

    {:ok, queued} = ElixirScope.ingest_batch(Enum.map(pids, &call/1), pipeline: p)
    assert queued < 64
    :ok = ElixirScope.flush(5_000, pipeline: p)
    assert ElixirScope.stats(pipeline: p).dropped.shed == 64 - queued
  end

  test "the store is bounded by the events it holds, not by the ids of dropped ones" do
    p = private_pipeline(@tiny ++ [storage: [max_events: 3_000]])
    pids = for _ <- 1..4, do: spawn(fn -> :ok end)

    stored =
      for round <- 1..50, reduce: 0 do
        acc ->
          events = for i <- 1..2_000, do: call(Enum.at(pids, rem(i, 4)), [round, i])
          {:ok, queued} = ElixirScope.ingest_batch(events, pipeline: p)
          :ok = ElixirScope.flush(5_000, pipeline: p)
          acc + queued
      end

    s = ElixirScope.stats(pipeline: p)
    assert s.dropped.buffer_full > 0 and s.stored == stored and stored > 3_000
    # Every burst dropped most of its events; the store still holds as many
    # events as it may, the newest ones.
    assert s.retained == min(stored, 3_000)
    assert length(DataAccess.query_recent(10_000, pipeline: p)) == s.retained
    assert DataAccess.stats(pipeline: p).memory_bytes / s.retained < 1_000
  end

  test "unknown and malformed options are refused with an ArgumentError" do
    p = private_pipeline()

    for {opts, message} <- [
          {[pipeline: p, limit: 5], ~r/unknown option :limit/},
          {[pipeline: p, on_full: :block], ~r/on_full must be :drop or :wait/},
          {[pipeline: p, on_full: :wait, timeout: -1], ~r/timeout must be/},
          {[:wait], ~r/keyword list/}
        ] do
      assert_raise ArgumentError, message, fn -> ElixirScope.ingest(call(), opts) end
      assert_raise ArgumentError, message, fn -> ElixirScope.ingest_batch([call()], opts) end
    end

    assert {:ok, _} = ElixirScope.ingest(call(), pipeline: p, on_full: :drop, timeout: :infinity)
  end
end
