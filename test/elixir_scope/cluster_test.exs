defmodule ElixirScope.ClusterTest do
  use ExUnit.Case

  alias ElixirScope.{Cluster, ClusterNodes, Traced}
  alias ElixirScope.Cluster.Session

  setup_all do
    {_peer, b} = ClusterNodes.start_peer(:b)
    %{b: b}
  end

  # A Counter server started on `node` (unlinked), killed when the test ends.
  defp remote_counter(node) do
    {:ok, server} = :erpc.call(node, Traced.Counter, :start, [0])

    on_exit(fn ->
      if node in Node.list(), do: :erpc.cast(node, Process, :exit, [server, :kill])
    end)

    server
  end

  defp bank_session(b, extra \\ []) do
    server = remote_counter(b)
    client = Traced.runner()

    {:ok, s} =
      Cluster.trace(
        [
          nodes: [node(), b],
          pids: [client, server],
          calls: [Traced.Counter, {Traced.Client, :bump, 1}],
          messages: true
        ] ++ extra
      )

    {s, client, server}
  end

  test "a session on two nodes traces each node's pids; queries merge both on one clock", %{b: b} do
    {s, client, server} = bank_session(b)
    assert %Session{nodes: [a, ^b]} = s
    assert a == node()
    assert {_, error} = s.offsets[b]
    assert error >= 0 and error < 50_000_000

    for _ <- 1..3, do: Traced.run(client, fn -> Traced.Client.bump(server) end)
    assert inspect(s) =~ "2 nodes"

    # While the session runs, a round leaves receives younger than a
    # second waiting: the 3 calls received on B and their 3 replies here.
    for n <- [a, b], do: :ok = :erpc.call(n, ElixirScope, :flush, [5_000])
    assert {:ok, %{linked: 0, unlinked: 6}} = Cluster.link(s)

    assert {:ok, summaries} = Cluster.stop_trace(s)
    assert %{events: ea, state_changes: 0} = summaries[node()]
    assert %{events: eb, state_changes: 3} = summaries[b]
    assert ea > 0 and eb > 0
    # A stopped session's counters stay readable.
    assert inspect(s) =~ "#{ea + eb} events, 0 dropped>"

    assert {:ok, results} = Cluster.query([], session: s)
    assert length(results) == ea + eb + 3
    # The round after the session stopped linked them all.
    assert length(for {_, e} <- results, {:receives, {_, _}} <- e.links, do: e) == 6
    # Merged by time, each node's events in their id order.
    for n <- [a, b] do
      ids = for {^n, e} <- results, do: e.event.id
      assert ids == Enum.sort(ids) and ids != []
    end

    # Each bump's call on A comes before the handle_call it caused on B
    bumps =
      for {^a, e} <- results, e.event.function == :bump, e.event.type == :function_call, do: e

    handles =
      for {^b, e} <- results,
          e.event.function == :handle_call,
          e.event.type == :function_call,
          do: e

    assert length(bumps) == 3 and length(handles) == 3

    # (On one clock within the offset's error bound.)
    for {bump, handle} <- Enum.zip(bumps, handles),
        do: assert(bump.event.timestamp < handle.event.timestamp + error)

    # A time window on the calling node's clock selects B's events by it.
    [first | _] = handles
    window = [from: first.event.timestamp, to: first.event.timestamp]
    assert {:ok, [{^b, same}]} = Cluster.query(window ++ [type: :function_call], session: s)
    assert same.event.id == first.event.id

    assert {:ok, [_, _]} = Cluster.query([type: :function_call, limit: 2], session: s)

    assert {:ok, stats} = Cluster.call_stat(:mfa, session: s)
    assert %{count: 3} = stats[{Traced.Client, :bump, 1}]
    assert %{count: 3} = stats[{Traced.Counter, :handle_call, 3}]
  end

  test "a node going down leaves the others' sessions and queries working, and says so",
       %{b: b} do
    {peer, c} = ClusterNodes.start_peer(:c)
    on_c = remote_counter(c)
    on_b = remote_counter(b)
    client = Traced.runner()

    {:ok, s} =
      Cluster.trace(
        nodes: [node(), b, c],
        pids: [client, on_b, on_c],
        calls: [Traced.Client, Traced.Counter]
      )

    Traced.run(client, fn -> Traced.Client.loop(3) end)
    :peer.stop(peer)
    # B keeps tracing after C is gone.
    1 = GenServer.call(on_b, :bump)

    assert {:ok, summaries} = Cluster.stop_trace(s)
    assert summaries[c] == {:error, :nodedown}
    assert %{events: 14} = summaries[node()]
    assert %{events: 2, state_changes: 1} = summaries[b]

    assert {:partial, results, [^c]} = Cluster.query([], session: s)
    assert length(results) == 17

    assert results |> Enum.map(&elem(&1, 0)) |> Enum.uniq() |> Enum.sort() ==
             Enum.sort([node(), b])

    # A pid: filter asks only the pid's node, so C being down does not matter.
    assert {:ok, on_b_events} = Cluster.query([pid: on_b], session: s)
    assert length(on_b_events) == 3 and Enum.all?(on_b_events, &(elem(&1, 0) == b))

    assert {:partial, stats, [^c]} = Cluster.call_stat(:mfa, session: s)

    assert %{
             {Traced.Client, :step, 1} => %{count: 3},
             {Traced.Counter, :handle_call, 3} => %{count: 1}
           } = stats

    assert inspect(s) =~ "unreachable: #{c}"
  end

  test "a call from A to B and a cast onward to C link into one chain across the nodes", %{b: b} do
    {_peer, c} = ClusterNodes.start_peer(:c)
    {:ok, counter} = :erpc.call(c, Traced.Counter, :start, [0])
    {:ok, relay} = :erpc.call(b, Traced.Relay, :start, [counter])
    client = Traced.runner()
    a = node()

    {:ok, s} =
      Cluster.trace(
        nodes: [a, b, c],
        pids: [client, relay, counter],
        calls: [Traced.Relay, Traced.Counter, {Traced.Client, :relay, 1}],
        messages: true
      )

    for _ <- 1..2, do: :relayed = Traced.run(client, fn -> Traced.Client.relay(relay) end)
    # The casts travel B -> C, apart from this node's messages: wait until
    # the counter has handled both.
    ElixirScope.TestEvents.eventually(fn -> :erpc.call(c, :sys, :get_state, [counter]) == 2 end)
    {:ok, _} = Cluster.stop_trace(s)
    # stop_trace linked everything: another round finds nothing new, and
    # no receive waits for its send.
    assert {:ok, %{linked: 0, unlinked: 0}} = Cluster.link(s)

    # Per relay: the call (A->B), its reply (B->A) and the cast (B->C).
    {:ok, events} = Cluster.query([], session: s)

    remote = for {n, e} <- events, {k, {_, _}} <- e.links, do: {n, k, e}
    receives = for {n, :receives, e} <- remote, do: {n, e}
    assert length(receives) == 6

    assert Enum.all?(receives, fn {_, e} -> e.correlation_confidence == 1.0 end),
           inspect(for {n, e} <- receives, do: {n, e.event.id, e.links, e.correlation_confidence})

    assert length(for {_, :received_by, _} <- remote, do: 1) == 6

    # Each receive names a send on the other node that names it back.
    for {n, e} <- receives do
      [{send_node, send_id}] = for {:receives, {sn, sid}} <- e.links, do: {sn, sid}
      assert send_node != n

      [{^send_node, send}] =
        for {^send_node, x} <- events, x.event.id == send_id, do: {send_node, x}

      assert {:received_by, {n, e.event.id}} in send.links
      assert send.event.type == :message_send and send.event.data == e.event.data
    end

    # From C's state change back to A's call of Client.relay/1.
    [{^c, change} | _] = for {^c, e} <- events, e.event.type == :state_change, do: {c, e}
    chain = Cluster.get_correlation_chain({c, change.event.id}, session: s)
    assert List.last(chain) == {c, change}
    assert Enum.dedup(for {n, _} <- chain, do: n) == [a, b, c]

    assert Enum.any?(chain, fn {n, e} ->
             n == a and e.event.type == :function_call and e.event.function == :relay
           end)

    # The Chrome trace: a trace process per node, the 6 messages between
    # nodes as paired flows, every call ended on its track.
    {:ok, json} = Cluster.chrome_trace([], :binary, session: s)
    path = Path.join(System.tmp_dir!(), "es_cluster_#{System.unique_integer([:positive])}.json")
    File.write!(path, json)
    on_exit(fn -> File.rm(path) end)
    checker = Path.expand("../support/json_check.py", __DIR__)
    {out, 0} = System.cmd("python3", [checker, "chrome", path], stderr_to_stdout: true)
    assert ["ok", begins, "6", _] = String.split(out)
    assert String.to_integer(begins) > 0

    for n <- [a, b, c], do: assert(json =~ ~s("name":"#{n}"))
  end

  test "identical messages to one receiver: certain from one process, 1/n from several on a node",
       %{b: b} do
    {_peer, c} = ClusterNodes.start_peer(:c)
    receiver = Traced.runner()
    [b1, b2] = for _ <- 1..2, do: :erpc.call(b, Traced, :forwarder, [])
    c1 = :erpc.call(c, Traced, :forwarder, [])

    {:ok, s} = Cluster.trace(nodes: [node(), b, c], pids: [receiver, b1, b2, c1], messages: true)

    for f <- [b1, b2, c1], do: send(f, {:send, receiver, :ping})

    ElixirScope.TestEvents.eventually(fn ->
      {:message_queue_len, 3} == Process.info(receiver, :message_queue_len)
    end)

    {:ok, _} = Cluster.stop_trace(s, link: false)
    # The forwarders' three receives come from this node's test process,
    # which is not traced: they stay unlinked, their sender's node known.
    assert {:ok, %{linked: 3, unlinked: 3}} = Cluster.link(s)

    {:ok, pings} = Cluster.query([pid: receiver, type: :message_receive], session: s)
    rated = for {_, e} <- pings, do: {e.event.peer, e.correlation_confidence}
    assert Enum.sort(rated) == Enum.sort([{b, 0.5}, {b, 0.5}, {c, 1.0}])

    {:ok, received} = Cluster.query([type: :message_receive], session: s)
    triggers = for {_, e} <- received, match?({:send, _, :ping}, e.event.data), do: e
    assert length(triggers) == 3

    for e <- triggers do
      assert e.event.peer == node() and e.links == [] and e.correlation_confidence == 0.0
    end

    # Each node counts what it linked and what still waits for its send.
    waiting = fn n -> :erpc.call(n, ElixirScope.EventCorrelator, :metrics, []).cross_node end
    assert %{waiting_receives: 0, waiting_sends: 0} = waiting.(node())
    assert %{waiting_receives: 2, waiting_sends: 0} = waiting.(b)
    assert %{waiting_receives: 1, dropped: 0} = waiting.(c)
  end

  test "messages ingested from Elixir link across nodes too (fingerprinted when exchanged)",
       %{b: b} do
    receiver = remote_counter(b)
    sender = Traced.runner()

    {:ok, s} =
      Cluster.trace(
        nodes: [node(), b],
        pids: [sender, receiver],
        messages: true,
        link_every: false
      )

    event = fn type, pid, peer ->
      %ElixirScope.Event{type: type, pid: pid, peer: peer, data: {:hello, [1, 2]}}
    end

    {:ok, _} = ElixirScope.ingest(event.(:message_send, sender, receiver))
    {:ok, _} = :erpc.call(b, ElixirScope, :ingest, [event.(:message_receive, receiver, node())])
    {:ok, _} = Cluster.stop_trace(s)

    {:ok, [{^b, received}]} = Cluster.query([pid: receiver, type: :message_receive], session: s)
    assert [receives: {node, send_id}] = received.links
    assert node == node() and received.correlation_confidence == 1.0
    {:ok, [{_, sent}]} = Cluster.query([pid: sender, type: :message_send], session: s)
    assert sent.event.id == send_id and sent.links == [received_by: {b, received.event.id}]
  end

  test "a second session on a node that traces is refused, and the first still links",
       %{b: b} do
    {s, client, server} = bank_session(b)
    a = node()

    assert {:error, {^a, {:session_active, _}}} =
             Cluster.trace(nodes: [node(), b], pids: :new, messages: true)

    for _ <- 1..2, do: Traced.run(client, fn -> Traced.Client.bump(server) end)
    {:ok, _} = Cluster.stop_trace(s)
    {:ok, events} = Cluster.query([type: :message_receive], session: s)
    assert length(for {_, e} <- events, {:receives, {_, _}} <- e.links, do: e) == 4
  end

  test "a node traced alone counts its messages with other nodes and keeps none waiting",
       %{b: b} do
    server = remote_counter(b)
    client = Traced.runner()
    # One bump before the session: code the bumps load (a first call's
    # module load) would add a message with the code server.
    Traced.run(client, fn -> Traced.Client.bump(server) end)
    # A pipeline of its own: no cluster session ever named its node.
    opts = [pipeline: ElixirScope.TestEvents.private_pipeline()]
    {:ok, s} = ElixirScope.trace([pids: [client], messages: true] ++ opts)
    for _ <- 1..5, do: Traced.run(client, fn -> Traced.Client.bump(server) end)
    {:ok, _} = ElixirScope.stop_trace(s)
    :ok = ElixirScope.flush(5_000, opts)
    m = ElixirScope.EventCorrelator.metrics(opts)

    # Each bump: a call to the server on B, its reply from B: they cannot
    # pair here, and none waits for a half that would never come. What
    # waits is local: the runner's 5 requests from this process (their
    # send was not traced) and its 5 answers (their receive was not).
    assert {m.cross_node.sends, m.cross_node.receives} == {5, 5}
    assert {m.pending_sends, m.pending_receives} == {5, 5}
    assert m.cross_node.waiting_receives == 0
  end

  test "link rounds run on each node while the session runs", %{b: b} do
    {s, client, server} = bank_session(b, link_every: 100)
    for _ <- 1..3, do: Traced.run(client, fn -> Traced.Client.bump(server) end)

    # Once the receives are older than a second, a round links them: the
    # 3 calls received on B and their replies here, before the session ends.
    linked = fn ->
      {:ok, events} = Cluster.query([type: :message_receive], session: s)
      length(for {_, e} <- events, {:receives, {_, _}} <- e.links, do: e)
    end

    ElixirScope.TestEvents.eventually(fn -> linked.() == 6 end, 500)
    assert Cluster.trace_info(s) |> Map.values() |> Enum.all?(& &1.running)
    {:ok, _} = Cluster.stop_trace(s)
    assert linked.() == 6
  end

  test "bad options, unknown nodes and nodes without elixir_scope give clear errors", %{b: b} do
    {_peer, bare} = ClusterNodes.start_peer(:bare, app: false)
    opts = [pids: :new, calls: [Traced.Client]]

    assert Cluster.trace([nodes: [node(), bare]] ++ opts) == {:error, {:not_running, bare}}
    nope = :"nope_#{System.unique_integer([:positive])}@127.0.0.1"
    assert Cluster.trace([nodes: [nope]] ++ opts) == {:error, {:nodedown, nope}}
    assert Cluster.trace([nodes: "b"] ++ opts) == {:error, {:invalid_option, :nodes, "b"}}

    assert Cluster.trace([nodes: [b], link_every: 0] ++ opts) ==
             {:error, {:invalid_option, :link_every, 0}}

    assert Cluster.trace([nodes: [b], bogus: 1] ++ opts) == {:error, {:unknown_option, :bogus}}
    assert Cluster.trace(nodes: [b], calls: [Traced.Client]) == {:error, {:missing_option, :pids}}

    remote = remote_counter(b)

    assert Cluster.trace(nodes: [node()], pids: [remote], calls: [Traced.Client]) ==
             {:error, {:pid_not_on_nodes, remote}}

    assert_raise ArgumentError, ~r/session:/, fn -> Cluster.query([], session: :nope) end
    # A bad filter raises here; the other node's stream is stopped, and
    # nothing of it reaches this process later.
    assert_raise ArgumentError, fn -> Cluster.query([bogus: 1], nodes: [node(), b]) end
    Process.sleep(100)
    refute_received {:DOWN, _, :process, _, _}
    refute_received {_, :done}
  end
end
