defmodule ElixirScope.BadInputPropertyTest do
  # Random terms (deep, huge, improper lists, binaries, refs, funs, ports,
  # bignums) at every public function that takes input: never a crash, only
  # a result, an {:error, _} or an ArgumentError with a message.
  use ExUnit.Case

  alias ElixirScope.{Debug, EventCorrelator}
  alias ElixirScope.Capture.{PipelineManager, RingBuffer}
  alias ElixirScope.Config.Layer2
  alias ElixirScope.Storage.{AsyncWriterPool, DataAccess}
  import ElixirScope.TestEvents

  @numtests 100

  defp deep(0), do: :bottom
  defp deep(n), do: [deep(n - 1)]

  defp nasty do
    port = Port.list() |> List.first()

    leaf =
      :proper_types.oneof([
        :proper_types.any(),
        :proper_types.exactly(make_ref()),
        :proper_types.exactly(fn x -> x end),
        :proper_types.exactly(port),
        :proper_types.exactly(self()),
        :proper_types.exactly(:binary.copy("x", 100_000)),
        :proper_types.exactly(Integer.pow(2, 200)),
        :proper_types.exactly(-1),
        :proper_types.exactly([1, 2 | 3]),
        :proper_types.exactly(deep(2_000)),
        :proper_types.exactly(%{pid: self(), type: :function_call}),
        :proper_types.exactly({:function_call, self(), M, :f, 1, [1], nil})
      ])

    :proper_types.oneof([leaf, :proper_types.list(leaf), :proper_types.tuple([leaf, leaf])])
  end

  # Every function called with `t` where it takes user input.
  defp calls(p, ring) do
    opts = [pipeline: p]

    [
      ingest: fn t -> ElixirScope.ingest(t, opts) end,
      ingest_batch: fn t -> ElixirScope.ingest_batch(t, opts) end,
      ingest_opts: fn t -> ElixirScope.ingest(call(), t) end,
      flush: fn t -> ElixirScope.flush(t, opts) end,
      trace: fn t -> ElixirScope.trace(t) end,
      trace_opts: fn t -> ElixirScope.trace(pids: self(), messages: t) end,
      trace_info: fn t -> ElixirScope.trace_info(t) end,
      stop_trace: fn t -> ElixirScope.stop_trace(t) end,
      get_event: fn t -> DataAccess.get_event(t, opts) end,
      query_recent: fn t -> DataAccess.query_recent(t, opts) end,
      query_by_pid: fn t -> DataAccess.query_by_pid(t, opts) end,
      query_by_pid_opts: fn t -> DataAccess.query_by_pid(self(), t) end,
      query_by_time_range: fn t -> DataAccess.query_by_time_range(t, t, opts) end,
      query_by_function: fn t -> DataAccess.query_by_function(t, t, opts) end,
      query_by_correlation: fn t -> DataAccess.query_by_correlation(t, opts) end,
      cleanup_old_events: fn t -> DataAccess.cleanup_old_events(t, opts) end,
      write_batch: fn t -> DataAccess.write_batch(t, opts) end,
      correlate_event: fn t -> EventCorrelator.correlate_event(t, opts) end,
      correlate_batch: fn t -> EventCorrelator.correlate_batch(t, opts) end,
      establish_link: fn t -> EventCorrelator.establish_link(t, t, t, opts) end,
      get_correlation_chain: fn t -> EventCorrelator.get_correlation_chain(t, opts) end,
      ring_new: fn t -> RingBuffer.new(t) end,
      ring_write: fn t -> RingBuffer.write(ring, t) end,
      ring_read_batch: fn t -> RingBuffer.read_batch(ring, t, t) end,
      scale_workers: fn t -> PipelineManager.scale_workers(p, t) end,
      update_config: fn t -> PipelineManager.update_config(p, t) end,
      validate: fn t -> Layer2.validate(t) end,
      merge: fn t -> Layer2.merge(Layer2.default_config(), t) end,
      remove_worker: fn t -> AsyncWriterPool.remove_worker(p, t) end,
      worker_stats: fn t -> AsyncWriterPool.get_worker_stats(p, t) end,
      dead_letters: fn t -> Debug.Layer2.dead_letters(t, opts) end
    ]
  end

  defp short(t), do: inspect(t, limit: 5, printable_limit: 40)

  defp outcome(fun, t) do
    fun.(t)
    :ok
  rescue
    e in ArgumentError -> if e.message != "", do: :ok, else: {:bad, e}
    e -> {:bad, e}
  catch
    kind, reason -> {:bad, {kind, reason}}
  end

  test "no public function crashes on any term" do
    p = private_pipeline()
    {:ok, ring} = RingBuffer.new(size: 64)
    calls = calls(p, ring)

    prop =
      :proper.forall(nasty(), fn t ->
        case Enum.find(calls, fn {_, f} -> outcome(f, t) != :ok end) do
          nil ->
            true

          {name, f} ->
            IO.puts("#{name}(#{short(t)}): #{short(outcome(f, t))}")
            false
        end
      end)

    assert :proper.quickcheck(prop, [
             :quiet,
             :noshrink,
             {:numtests, @numtests},
             {:on_output, fn _, _ -> :ok end}
           ])

    # A term may have been a valid trace option: end that session.
    if server = Process.whereis(ElixirScope.Tracer.Server),
      do: ElixirScope.Tracer.Server.stop(server, :requested)

    :ok = ElixirScope.flush(5_000, pipeline: p)
    s = ElixirScope.stats(pipeline: p)
    assert s.ingested == s.stored + s.dropped_total + s.queued
    assert Process.alive?(Process.whereis(PipelineManager))
  end
end
