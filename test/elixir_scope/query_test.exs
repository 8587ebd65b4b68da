defmodule ElixirScope.QueryTest do
  use ExUnit.Case

  alias ElixirScope.{Event, Query, Traced}
  import ElixirScope.TestEvents

  # fib(n) makes C(n) calls: C(0) = C(1) = 1, C(n) = C(n-1) + C(n-2) + 1.
  defp calls(n) when n < 2, do: 1
  defp calls(n), do: calls(n - 1) + calls(n - 2) + 1

  # fib(12) run by a traced process; returns the pipeline and the runner.
  defp traced_fib do
    p = private_pipeline()
    runner = Traced.runner()
    {:ok, s} = ElixirScope.trace(pids: runner, calls: [{Traced.Fib, :fib, 1}], pipeline: p)
    144 = Traced.run(runner, fn -> Traced.Fib.fib(12) end)
    {:ok, _} = ElixirScope.stop_trace(s)
    :ok = ElixirScope.flush(5_000, pipeline: p)
    {p, runner}
  end

  test "call_stat of a recursive function: every call counted, own times sum to the root's time" do
    {p, runner} = traced_fib()
    opts = [pipeline: p]
    stats = Query.call_stat(:mfa, opts)
    assert %{{Traced.Fib, :fib, 1} => s} = stats
    assert s.count == calls(12)
    [root_call] = Query.select([mfa: {Traced.Fib, :fib, 1}, type: :function_call, limit: 1], opts)

    [root, root_return] =
      ElixirScope.Storage.DataAccess.query_by_correlation(root_call.event.id, opts)

    assert root == root_call
    assert s.acc_time == root_return.event.timestamp - root.event.timestamp
    assert s.own_time == s.acc_time

    assert %{^runner => %{count: count}} = Query.call_stat(:pid, opts)
    assert count == calls(12)
    assert Query.call_stat(:module, opts) == %{Traced.Fib => s}

    # Counting only fib(1) calls: their children are none, they are leaves.
    ones = Query.call_stat(:mfa, [data: [1]] ++ opts)
    assert %{{Traced.Fib, :fib, 1} => %{count: 144}} = ones

    # A key function gives what the native path gives.
    assert Query.call_stat(fn e -> {e.event.module, e.event.function, e.event.arity} end, opts) ==
             stats

    assert [{{Traced.Fib, :fib, 1}, ^s}] = Query.sorted_call_stat(:mfa, [limit: 1] ++ opts)

    out = ExUnit.CaptureIO.capture_io(fn -> Query.print_sorted_call_stat(:mfa, opts) end)
    assert out =~ "ElixirScope.Traced.Fib.fib/1" and out =~ "#{calls(12)}"
  end

  test "select filters natively: pid, type, mfa with wildcards, module, time, data, limit, match, order" do
    p = private_pipeline()
    opts = [pipeline: p]
    [a, b] = for _ <- 1..2, do: spawn(fn -> :ok end)

    events = [
      %{call(a, [1, {:order, 42}]) | function: :run},
      %{call(b, [2]) | function: :run},
      %{call(a, [3]) | function: :other, arity: 1},
      %Event{type: :message_send, pid: a, data: {:order, 42}, peer: b},
      %Event{type: :custom, pid: b, data: %{deep: [{:x, {:order, 42}}]}}
    ]

    {:ok, 5} = ElixirScope.ingest_batch(events, opts)
    :ok = ElixirScope.flush(5_000, opts)
    data = fn events -> Enum.map(events, & &1.event.data) end

    assert data.(Query.select([pid: a], opts)) == [[1, {:order, 42}], [3], {:order, 42}]
    assert data.(Query.select([type: :function_call, pid: b], opts)) == [[2]]
    assert length(Query.select([mfa: {ElixirScope.TestEvents, :run, :_}], opts)) == 2
    assert data.(Query.select([mfa: {:_, :other, 1}], opts)) == [[3]]
    assert length(Query.select([module: ElixirScope.TestEvents], opts)) == 3

    assert data.(Query.select([data: {:order, 42}], opts)) ==
             [[1, {:order, 42}], {:order, 42}, %{deep: [{:x, {:order, 42}}]}]

    assert Query.select([data: {:order, 43}], opts) == []
    assert data.(Query.select([data: 42, type: [:message_send, :custom]], opts)) |> length() == 2

    all = Query.select([], opts)
    [first, second | _] = all

    assert Query.select([from: second.event.timestamp, to: second.event.timestamp], opts)
           |> Enum.member?(second)

    assert Query.select([limit: 2], opts) == [first, second]

    assert Query.select([limit: 2], [order: :desc] ++ opts) ==
             all |> Enum.reverse() |> Enum.take(2)

    assert Query.select([match: &(&1.event.pid == b), limit: 1], opts) == [Enum.at(all, 1)]
    assert Enum.to_list(Query.stream([], [chunk_size: 2] ++ opts)) == all

    assert Query.next(first, [pid: b], opts) == Enum.at(all, 1)
    assert Query.prev(List.last(all), [type: :function_call], opts) == Enum.at(all, 2)
    assert Query.next(List.last(all), [], opts) == nil
    assert {:ok, ^first} = Query.lookup(first.event.id, opts)
  end

  test "causes and effects follow the links one step" do
    {p, _runner} = traced_fib()
    opts = [pipeline: p]
    [root] = Query.select([type: :function_call, limit: 1], opts)
    effects = Query.effects(root, opts)
    # fib(12) calls fib(11) and fib(10) and returns.
    assert Enum.map(effects, & &1.event.type) == [
             :function_call,
             :function_call,
             :function_return
           ]

    assert Enum.all?(effects, fn e -> Enum.any?(e.links, &(elem(&1, 1) == root.event.id)) end)
    [child | _] = effects
    assert Query.causes(child.event.id, opts) == [root]
    assert Query.causes(10_000_000, opts) == []
  end

  test "bad filters and options raise ArgumentError" do
    p = private_pipeline()

    for filter <- [
          [colour: :red],
          [type: :nope],
          [mfa: {M, :f}],
          [mfa: {M, :f, 300}],
          [pid: :me],
          [from: 1.5],
          [limit: -1],
          [match: :nope],
          [after: -1]
        ] do
      assert_raise ArgumentError, fn -> Query.select(filter, pipeline: p) end
    end

    assert_raise ArgumentError, fn -> Query.select([], pipeline: p, order: :up) end
    assert_raise ArgumentError, fn -> Query.call_stat(:nope, pipeline: p) end
    assert_raise ArgumentError, fn -> Query.sorted_call_stat(:mfa, pipeline: p, sort_by: :x) end
    assert_raise ArgumentError, fn -> Query.next(0, [], pipeline: p) end
  end
end
