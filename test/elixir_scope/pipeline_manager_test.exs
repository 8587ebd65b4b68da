defmodule ElixirScope.Capture.PipelineManagerTest do
  use ExUnit.Case

  alias ElixirScope.Capture.PipelineManager
  alias ElixirScope.Config.Layer2
  alias ElixirScope.Storage.{AsyncWriterPool, DataAccess}
  import ElixirScope.TestEvents

  test "default config is the guide's, and validation names the bad path" do
    c = Layer2.default_config()
    assert c.pipeline == %{min_workers: 2, max_workers: 16, target_workers: 4}
    assert c.processing == %{batch_size: 100, flush_interval_ms: 10, max_batch_wait_ms: 50}

    assert c.correlation == %{
             ttl_seconds: 300,
             cleanup_interval_ms: 60_000,
             max_correlation_depth: 100,
             max_entries: 1_000_000
           }

    assert c.storage.write_batch_size == 1000
    assert {:ok, ^c} = Layer2.validate(c)

    assert Layer2.merge(c, processing: [batch_size: 0]) ==
             {:error, {:invalid_config, [:processing, :batch_size], :not_a_positive_integer}}

    assert Layer2.merge(c, capture: [ring_size: 1000]) ==
             {:error, {:invalid_config, [:capture, :ring_size], :size_must_be_power_of_2}}

    assert Layer2.merge(c, pipeline: [min_workers: 20]) ==
             {:error, {:invalid_config, [:pipeline, :min_workers], :greater_than_max_workers}}

    assert Layer2.merge(c, nope: [x: 1]) == {:error, {:invalid_config, [:nope], :unknown_key}}

    assert Layer2.merge(c, processing: [nope: 1]) ==
             {:error, {:invalid_config, [:processing, :nope], :unknown_key}}

    assert Layer2.merge(c, backpressure: [scale_up_threshold: 2.0]) ==
             {:error, {:invalid_config, [:backpressure, :scale_up_threshold], :not_a_fraction}}

    assert {:ok, %{processing: %{batch_size: 500}}} =
             Layer2.merge(c, %{processing: %{batch_size: 500}})
  end

  test "a pipeline with a bad config does not start" do
    Process.flag(:trap_exit, true)

    assert {:error, {:invalid_config, [:capture, :overflow_strategy], :invalid_overflow_strategy}} =
             PipelineManager.start_link(config: [capture: [overflow_strategy: :sample]])
  end

  test "workers scale, spawn, stop and report stats" do
    p = private_pipeline(pipeline: [min_workers: 1, max_workers: 3, target_workers: 1])
    assert PipelineManager.get_pipeline_stats(p).workers == 1
    assert :ok = PipelineManager.scale_workers(p, 3)
    assert length(AsyncWriterPool.list_workers(p)) == 3
    assert AsyncWriterPool.spawn_worker(p) == {:error, :max_workers_reached}
    [w | _] = AsyncWriterPool.list_workers(p)
    assert AsyncWriterPool.remove_worker(p, w) == :ok
    assert AsyncWriterPool.remove_worker(p, w) == {:error, :not_found}
    assert AsyncWriterPool.get_worker_stats(p, w) == {:error, :not_found}
    assert {:ok, _} = AsyncWriterPool.spawn_worker(p)
    assert PipelineManager.scale_workers(p, 4) == {:error, :out_of_bounds}
    assert_raise ArgumentError, fn -> PipelineManager.scale_workers(p, 0) end

    {:ok, 500} = ElixirScope.ingest_batch(for(i <- 1..500, do: call(self(), i)), pipeline: p)
    :ok = ElixirScope.flush(5_000, pipeline: p)

    processed =
      AsyncWriterPool.list_workers(p)
      |> Enum.map(&AsyncWriterPool.get_worker_stats(p, &1))
      |> Enum.map(& &1.events_processed)
      |> Enum.sum()

    # The removed worker may have processed some too.
    assert processed <= 500

    stats = PipelineManager.get_pipeline_stats(p)
    assert stats.events_processed == 500
    assert stats.avg_latency_ms > 0 and stats.latency_p99_ms >= stats.latency_p50_ms
    assert stats.buffer_utilization >= 0.0 and stats.buffer_utilization <= 1.0
  end

  test "update_config applies live settings and refuses fixed ones" do
    p = private_pipeline()

    assert PipelineManager.update_config(p, processing: [batch_size: 7], storage: [max_events: 10]) ==
             :ok

    assert PipelineManager.get_config(p).processing.batch_size == 7

    {:ok, 30} = ElixirScope.ingest_batch(for(i <- 1..30, do: call(self(), i)), pipeline: p)
    :ok = ElixirScope.flush(5_000, pipeline: p)
    assert length(DataAccess.query_recent(100, pipeline: p)) == 10

    assert PipelineManager.update_config(p, capture: [ring_size: 64]) ==
             {:error, {:restart_required, [:capture, :ring_size]}}

    assert PipelineManager.update_config(p, processing: [batch_size: -1]) ==
             {:error, {:invalid_config, [:processing, :batch_size], :not_a_positive_integer}}

    assert PipelineManager.get_config(p).processing.batch_size == 7
  end

  test "the default pipeline survives a crash of its manager" do
    before = Process.whereis(PipelineManager)
    {:ok, id} = ElixirScope.ingest(call(self(), :before_crash))
    Process.exit(before, :kill)
    eventually(fn -> (pid = Process.whereis(PipelineManager)) && pid != before end, 200)

    {:ok, id2} = ElixirScope.ingest(call(self(), :after_crash))
    assert id2 > id
    :ok = ElixirScope.flush()
    assert {:ok, %{event: %{data: :before_crash}}} = DataAccess.get_event(id)
    assert {:ok, %{event: %{data: :after_crash}}} = DataAccess.get_event(id2)
    s = ElixirScope.stats()
    assert s.ingested == s.stored + s.dropped_total + s.queued
  end
end
