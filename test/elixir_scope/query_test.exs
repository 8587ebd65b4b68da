defmodule ElixirScope.QueryTest do
  use ExUnit.Case

  alias ElixirScope.{Event, Query, Traced}
  import ElixirScope.TestEvents

  # fib(n) makes C(n) calls: C(0) = C(1) = 1, C(n) = C(n-1) + C(n-2) + 1.
  defp calls(n) when n < 2, do: 1
  defp calls(n), do: calls(n - 1) + calls(n - 2) + 1

  # fib(n) run by a traced process; returns the pipeline and the runner.
  defp traced_fib(n \\ 12, trace_opts \\ []) do
    p = private_pipeline()
    runner = Traced.runner()

    {:ok, s} =
      ElixirScope.trace([pids: runner, calls: [{Traced.Fib, :fib, 1}], pipeline: p] ++ trace_opts)

    Traced.run(runner, fn -> Traced.Fib.fib(n) end)
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

  @fib {Traced.Fib, :fib, 1}
  # Calls of fib(k) within fib(n) (the leaves 0 and 1 included).
  defp fib(n) when n < 2, do: n
  defp fib(n), do: fib(n - 1) + fib(n - 2)

  test "ranges: each call's events to its return, with max_depth and output" do
    {p, _} = traced_fib(5)
    opts = [pipeline: p]
    [root | _] = all = Query.ranges([mfa: @fib], opts)
    assert length(all) == calls(5)
    assert length(root) == 2 * calls(5), "the root's range is every event"

    assert hd(root).event.type == :function_call and
             List.last(root).event.type == :function_return

    assert Enum.all?(Query.ranges([mfa: @fib], [max_depth: 0] ++ opts), &(length(&1) == 2))
    assert Query.ranges([mfa: @fib, data: [0]], opts) |> length() == fib(4)
    assert Query.ranges([mfa: @fib], [output: :incomplete] ++ opts) == []
    assert length(Query.ranges([mfa: @fib, limit: 3], [output: :complete] ++ opts)) == 3
  end

  test "tracebacks: stacks root first, output, format, order" do
    {p, _} = traced_fib(5)
    opts = [pipeline: p]
    zeros = Query.tracebacks([mfa: @fib, data: [0]], opts)
    assert length(zeros) == fib(4), "one per fib(0) call"
    [root | _] = hd(zeros)
    assert root.event.data == [5] and Enum.all?(zeros, &(hd(&1) == root))
    assert Enum.all?(zeros, &(List.last(&1).event.data == [0]))
    assert Enum.map(hd(zeros), &hd(&1.event.data)) == [5, 4, 3, 2, 0]

    assert [[^root]] = Query.tracebacks([mfa: @fib], opts), ":shortest keeps the root's"
    leaves = Query.tracebacks([mfa: @fib], [output: :longest] ++ opts)
    assert length(leaves) == fib(5) + fib(4), "every fib(1) and fib(0) call"

    assert length(Query.tracebacks([mfa: @fib, type: :function_call], [output: :all] ++ opts)) ==
             calls(5)

    assert length(Query.tracebacks([mfa: @fib], [output: :all] ++ opts)) == 2 * calls(5),
           "a return's traceback is its call's"

    assert Query.tracebacks([mfa: @fib], [output: :all, format: :root] ++ opts) == [root]
    [bottom | _] = Query.tracebacks([mfa: @fib, data: [0]], [order: :bottom_up] ++ opts)
    assert List.last(bottom) == root

    # fib(0) is reached by 5 -> 4 -> 3 -> 2, 5 -> 4 -> 2 and 5 -> 3 -> 2.
    assert [%{call: ^root, children: [four, three]}] =
             Query.tracebacks([mfa: @fib, data: [0]], [format: :tree] ++ opts)

    assert {four.call.event.data, three.call.event.data} == {[4], [3]}
    assert [%{children: [_three_below_four, _two_below_four]}] = [four]
    assert length(Query.tracebacks([mfa: @fib], [output: :longest, limit: 2] ++ opts)) == 2
  end

  test "tracebacks across processes follow the message that caused a callback" do
    p = private_pipeline()

    {_server, client} =
      Traced.traced_bank(p, fn client, server ->
        1 = Traced.run(client, fn -> Traced.Client.bump(server) end)
      end)

    handler = [mfa: {Traced.Counter, :handle_call, 3}]
    assert [[only]] = Query.tracebacks(handler, pipeline: p)
    assert only.event.function == :handle_call
    assert [[bump, ^only]] = Query.tracebacks(handler, across: true, pipeline: p)
    assert {bump.event.function, bump.event.pid} == {:bump, client}
  end

  test "state_at gives a server's state at a time; replay calls a captured call again" do
    p = private_pipeline()
    {:ok, server} = Traced.Counter.start(0)

    {:ok, s} =
      ElixirScope.trace(pids: server, calls: [Traced.Counter], messages: true, pipeline: p)

    before = System.monotonic_time(:nanosecond)
    for _ <- 1..3, do: Traced.Client.bump(server)
    {:ok, _} = ElixirScope.stop_trace(s)
    :ok = ElixirScope.flush(5_000, pipeline: p)
    opts = [pipeline: p]
    changes = Query.select([type: :state_change], opts)
    assert Enum.map(changes, & &1.event.data.new) == [1, 2, 3]
    second = Enum.at(changes, 1)
    assert Query.state_at(server, second.event.timestamp, opts) == {:ok, 2, second.event.id}
    assert Query.state_at(server, System.monotonic_time(:nanosecond), opts) |> elem(1) == 3
    assert Query.state_at(server, before, opts) == {:error, :unknown}
    GenServer.stop(server)

    {fp, _} = traced_fib(6)
    [root | _] = Query.select([mfa: @fib, type: :function_call], pipeline: fp)
    assert Query.replay(root) == {:ok, 8}
    [ret | _] = Query.select([type: :function_return], pipeline: fp)
    assert Query.replay(ret) == {:error, :not_a_call}
    {tp, _} = traced_fib(3, payloads: 1)
    [cut | _] = Query.select([type: :function_call], pipeline: tp)
    assert Query.replay(cut) == {:error, :truncated_arguments}
    gone = put_in(root.event.module, :"Elixir.No.Such.Module")
    assert Query.replay(gone) == {:error, {:module_not_found, No.Such.Module}}
  end

  test "top_call_trees finds the repeated subtrees of a recursion" do
    {p, _} = traced_fib(6)
    opts = [pipeline: p]
    arg = fn %{tree: t} -> t.call.event.data end

    # fib(4) (9 calls) runs twice; everything smaller that repeats is inside it.
    assert [%{count: 2, tree: tree} = top] = Query.top_call_trees(opts)
    assert arg.(top) == [4]
    assert tree.result.event.data == 3
    assert Enum.map(tree.children, & &1.call.event.data) == [[3], [2]]
    assert top.acc_time > 0

    complete = Query.top_call_trees([output: :complete] ++ opts)

    assert Enum.sort(Enum.map(complete, &{arg.(&1), &1.count})) ==
             [{[0], fib(5)}, {[1], fib(6)}, {[2], fib(5)}, {[3], fib(4)}, {[4], 2}]

    assert complete == Enum.sort_by(complete, &(-&1.acc_time))
    assert [%{count: 3} = three] = Query.top_call_trees([max_size: 5] ++ opts)
    assert arg.(three) == [3]
    assert [%{count: 5} = two] = Query.top_call_trees([min_count: 4] ++ opts)
    assert arg.(two) == [2]
    assert Query.top_call_trees([min_time: 10_000_000_000] ++ opts) == []
    assert_raise ArgumentError, fn -> Query.top_call_trees(max_size: 0) end
  end
end
