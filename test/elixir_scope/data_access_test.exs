defmodule ElixirScope.Storage.DataAccessTest do
  use ExUnit.Case, async: true

  alias ElixirScope.{CorrelatedEvent, Event}
  alias ElixirScope.Storage.DataAccess
  import ElixirScope.TestEvents

  setup do
    {:ok, opts: [pipeline: private_pipeline()]}
  end

  defp ingest_all(events, opts) do
    {:ok, n} = ElixirScope.ingest_batch(events, opts)
    assert n == length(events)
    :ok = ElixirScope.flush(5_000, opts)
  end

  defp data(results), do: Enum.map(results, & &1.event.data)

  test "queries by pid, function, time, recency and id", %{opts: opts} do
    other = spawn(fn -> :ok end)
    base = System.monotonic_time(:nanosecond)

    events =
      for i <- 1..20 do
        %Event{
          type: :function_call,
          pid: if(rem(i, 2) == 0, do: self(), else: other),
          module: if(i <= 10, do: Alpha, else: Beta),
          function: :run,
          arity: 1,
          timestamp: base + i * 1000,
          data: i
        }
      end

    ingest_all(events, opts)

    assert data(DataAccess.query_by_pid(self(), opts)) == Enum.to_list(2..20//2)
    assert data(DataAccess.query_by_pid(other, [order: :desc, limit: 3] ++ opts)) == [19, 17, 15]
    assert data(DataAccess.query_by_function(Beta, :run, opts)) == Enum.to_list(11..20)
    assert DataAccess.query_by_function(Beta, :nope, opts) == []
    assert data(DataAccess.query_by_time_range(base + 5000, base + 8000, opts)) == [5, 6, 7, 8]

    assert data(
             DataAccess.query_by_time_range(
               base + 5000,
               base + 8000,
               [order: :desc, limit: 2] ++ opts
             )
           ) ==
             [8, 7]

    assert data(DataAccess.query_recent(3, opts)) == [20, 19, 18]
    [%CorrelatedEvent{event: %Event{id: id}} | _] = DataAccess.query_recent(1, opts)

    assert {:ok, %CorrelatedEvent{event: %Event{id: ^id, data: 20}}} =
             DataAccess.get_event(id, opts)

    assert DataAccess.get_event(id + 1000, opts) == {:error, :not_found}
    # A call is its own correlation; its return (none here) would join it.
    assert [%CorrelatedEvent{event: %Event{id: ^id}}] = DataAccess.query_by_correlation(id, opts)
    assert DataAccess.query_by_correlation(id + 1000, opts) == []
  end

  test "cleanup_old_events removes by time", %{opts: opts} do
    base = System.monotonic_time(:nanosecond)
    ingest_all(for(i <- 1..10, do: %{call(self(), i) | timestamp: base + i}), opts)
    assert DataAccess.cleanup_old_events(base + 4, opts) == {:ok, 3}
    assert data(DataAccess.query_by_pid(self(), opts)) == Enum.to_list(4..10)
    assert DataAccess.cleanup_old_events(base, opts) == {:ok, 0}
    assert %{retained: 7, removed: 3} = DataAccess.stats(opts)
  end

  test "max_events evicts the oldest and counts them" do
    opts = [pipeline: private_pipeline(storage: [max_events: 50])]
    ingest_all(for(i <- 1..120, do: call(self(), i)), opts)

    assert data(DataAccess.query_by_pid(self(), [limit: :infinity] ++ opts)) ==
             Enum.to_list(71..120)

    s = ElixirScope.stats(opts)
    assert s.retained == 50 and s.evicted == 70 and s.stored == 120
  end

  test "write_batch stores events directly and reports bad ones", %{opts: opts} do
    assert DataAccess.write_batch(
             [call(self(), :a), %CorrelatedEvent{event: call(self(), :b)}],
             opts
           ) == :ok

    assert data(DataAccess.query_recent(2, opts)) == [:b, :a]

    assert DataAccess.write_batch([call(self(), :c), :junk], opts) ==
             {:error, {:invalid_events, 1, [{1, :not_an_event}]}}
  end

  test "streamed reads equal full reads, whatever the chunk size", %{opts: opts} do
    pids = for _ <- 1..7, do: spawn(fn -> :ok end)

    events =
      for i <- 1..5_000, do: %{call(Enum.at(pids, rem(i, 7)), i) | function: :"f#{rem(i, 3)}"}

    ingest_all(events, opts)
    [first | _] = all = DataAccess.query_recent(10_000, opts) |> Enum.reverse()
    last = List.last(all)
    {from, to} = {first.event.timestamp, last.event.timestamp}
    ids = fn events -> Enum.map(events, & &1.event.id) end

    for chunk <- [1, 7, 1_000, 10_000], order <- [:asc, :desc] do
      read =
        &(DataAccess.stream([chunk_size: chunk, order: order] ++ &1 ++ opts) |> Enum.to_list())

      assert read.(pid: hd(pids)) ==
               DataAccess.query_by_pid(hd(pids), [order: order, limit: :infinity] ++ opts)

      assert read.(function: {ElixirScope.TestEvents, :f1}) ==
               DataAccess.query_by_function(
                 ElixirScope.TestEvents,
                 :f1,
                 [order: order, limit: :infinity] ++ opts
               )

      assert ids.(read.(time: {from, to})) ==
               ids.(
                 DataAccess.query_by_time_range(
                   from,
                   to,
                   [order: order, limit: :infinity] ++ opts
                 )
               )

      assert length(read.([])) == 5_000
    end

    assert ids.(DataAccess.stream(opts) |> Enum.to_list()) == ids.(all)
    assert DataAccess.stream([limit: 3, order: :desc] ++ opts) |> Enum.to_list() |> length() == 3
    assert Enum.take(DataAccess.stream([chunk_size: 2] ++ opts), 5) == Enum.take(all, 5)
    assert_raise ArgumentError, fn -> DataAccess.stream(pid: :me) end
    assert_raise ArgumentError, fn -> DataAccess.stream(pid: self(), time: {1, 2}) end
    assert_raise ArgumentError, fn -> DataAccess.stream(chunk_size: 0) end
    assert_raise ArgumentError, fn -> DataAccess.stream(colour: :red) end
  end

  test "bad arguments raise ArgumentError" do
    assert_raise ArgumentError, fn -> DataAccess.query_recent(-1) end
    assert_raise ArgumentError, fn -> DataAccess.get_event("1") end
    assert_raise ArgumentError, fn -> DataAccess.query_by_pid(:me) end
    assert_raise ArgumentError, fn -> DataAccess.query_by_pid(self(), limit: -1) end
    assert_raise ArgumentError, fn -> DataAccess.query_by_pid(self(), order: :up) end
    assert_raise ArgumentError, fn -> DataAccess.query_by_time_range(1.0, 2) end
    assert_raise ArgumentError, fn -> DataAccess.query_by_function("M", :f) end
    assert_raise ArgumentError, fn -> DataAccess.query_by_correlation(0) end
    assert_raise ArgumentError, fn -> DataAccess.cleanup_old_events(:now) end
    assert_raise ArgumentError, fn -> DataAccess.write_batch(:x) end
    assert_raise ArgumentError, fn -> DataAccess.write_batch([call() | :improper]) end
  end
end
