# Cluster query benchmark (issue 15). Run: ./setup.sh bench-cluster
#   (or MIX_ENV=prod mix run bench/cluster.exs)
# Env: BENCH_CLUSTER_EVENTS (events per node, default 1_000_000),
#   BENCH_CLUSTER_ROUNDS (calls in the message-heavy part, default 50_000).
#
# Three nodes on this machine (this VM and two :peer nodes over loopback
# distribution), each with its default store holding the same number of
# events over 100 processes of its own. Figure: Query.select(pid: p) on the
# node holding p, against Cluster.query(pid: p) over the three nodes (the
# other two answer with nothing; the results come back merged on this
# node's clock). Medians of 5.
#
# Then a message-heavy workload: a process here calls an Agent on the
# second node (a GenServer.call and its reply: four message events per
# round trip, all crossing nodes), traced on both sides; figure: the time
# Cluster.link/1 takes to link them, per message event, against the time
# the workers took to drain them. Run twice: a node's first round pays for
# fresh memory, later ones reuse it.
Code.require_file("../test/support/cluster_nodes.ex", __DIR__)

alias ElixirScope.{Cluster, ClusterNodes, Query}
alias ElixirScope.Storage.DataAccess

Logger.configure(level: :error)

defmodule ClusterBench do
  def median(xs), do: xs |> Enum.sort() |> Enum.at(div(length(xs), 2))
  def med_us(fun), do: median(for _ <- 1..5, do: fun |> :timer.tc() |> elem(0))

  # `n` events over 100 processes of `node`, written there in batches;
  # returns the processes.
  def fill(node, n) do
    pids = for _ <- 1..100, do: :erpc.call(node, :erlang, :spawn, [:timer, :sleep, [:infinity]])
    tuple = List.to_tuple(pids)

    for start <- 0..(n - 1)//10_000 do
      batch =
        for i <- start..min(start + 9_999, n - 1) do
          %ElixirScope.Event{
            type: if(rem(i, 2) == 0, do: :function_call, else: :function_return),
            pid: elem(tuple, rem(div(i, 2), 100)),
            module: ClusterBench.Work,
            function: :step,
            arity: 1,
            data: [i]
          }
        end

      :ok = :erpc.call(node, DataAccess, :write_batch, [batch], 60_000)
    end

    pids
  end
end

# (Modules are defined before this VM starts distribution.)
defmodule ClusterBench.Chatty do
  @busy "ElixirScope.Native.pipeline_stats(ElixirScope.Capture.PipelineManager.pipeline()).busy_ns"

  # One session of `rounds` calls from a process here to an Agent on `b`,
  # then its link round, timed; prints the figures under `label`.
  def run(b, rounds, label) do
    {:ok, agent} = :erpc.call(b, Agent, :start, [:erlang, :abs, [0]])
    me = self()

    caller =
      spawn(fn ->
        receive do: (:go -> :ok)
        for _ <- 1..rounds, do: Agent.get(agent, :erlang, :abs, [])
        send(me, :done)
      end)

    # Linked in one round after the session (link_every: false) so the
    # bench can time it: each half is exchanged once whichever round takes
    # it, so the work per event is the one the default rounds (every
    # second) share.
    {:ok, chatty} =
      Cluster.trace(
        nodes: [node(), b],
        pids: [caller, agent],
        messages: true,
        max_events: 4 * rounds + 100,
        link_every: false
      )

    # The drain cost: the time the two nodes' workers spend on the
    # session's events (correlate, index, store), from their busy counters.
    busy_before = busy(b)
    {run_us, _} = :timer.tc(fn -> send(caller, :go) && receive(do: (:done -> :ok)) end)
    {:ok, per_node} = Cluster.stop_trace(chatty, link: false)
    drain_ns = busy(b) - busy_before
    events = per_node |> Map.values() |> Enum.map(& &1.events) |> Enum.sum()
    dropped = per_node |> Map.values() |> Enum.map(& &1.dropped) |> Enum.sum()
    ambiguous_before = ambiguous(b)
    before = schedulers(b)
    {link_us, {:ok, counts}} = :timer.tc(fn -> Cluster.link(chatty) end)
    link_cpu_ns = busy_share(before, schedulers(b)) * link_us * 1000
    Process.exit(agent, :kill)

    per_event = fn ns -> Float.round(ns / max(events, 1), 1) end
    share = fn ns -> Float.round(100 * ns / max(drain_ns, 1), 1) end

    IO.puts(
      "message-heavy, #{label}: #{rounds} GenServer calls to #{b}: #{events} message events " <>
        "traced (dropped #{dropped}) in #{div(run_us, 1000)} ms\n" <>
        "  drain (both nodes' workers, busy time): #{per_event.(drain_ns)} ns per event\n" <>
        "  Cluster.link: #{counts.linked} linked (#{ambiguous(b) - ambiguous_before} below " <>
        "confidence 1.0), #{counts.unlinked} unlinked in " <>
        "#{Float.round(link_us / 1000, 1)} ms = #{per_event.(link_us * 1000)} ns per event " <>
        "-> #{share.(link_us * 1000)}% of the drain (target <= 10%)\n" <>
        "  Cluster.link CPU (both nodes' schedulers busy): #{per_event.(link_cpu_ns)} ns " <>
        "per event -> #{share.(link_cpu_ns)}% of the drain"
    )
  end

  defp busy(b) do
    Enum.sum(
      for node <- [node(), b], do: :erpc.call(node, Code, :eval_string, [@busy]) |> elem(0)
    )
  end

  defp ambiguous(b) do
    Enum.sum(
      for n <- [node(), b],
          do: :erpc.call(n, ElixirScope.EventCorrelator, :metrics, []).cross_node.ambiguous
    )
  end

  # Both nodes' schedulers (normal and dirty, where the exchange's NIFs
  # run), from scheduler wall time.
  defp schedulers(b) do
    for node <- [node(), b],
        do: :erpc.call(node, :erlang, :statistics, [:scheduler_wall_time_all])
  end

  # How many schedulers were busy on average between two samples.
  defp busy_share(before, now) do
    Enum.zip(before, now)
    |> Enum.flat_map(fn {b0, b1} -> Enum.zip(Enum.sort(b0), Enum.sort(b1)) end)
    |> Enum.map(fn {{_, a0, t0}, {_, a1, t1}} ->
      if t1 > t0, do: (a1 - a0) / (t1 - t0), else: 0
    end)
    |> Enum.sum()
  end
end

n = String.to_integer(System.get_env("BENCH_CLUSTER_EVENTS", "1000000"))
ClusterNodes.distribute!()
{_, b} = ClusterNodes.start_peer(:bench_b)
{_, c} = ClusterNodes.start_peer(:bench_c)
nodes = [node(), b, c]

# A session (on a process per node that does nothing), so queries can use
# the clock offsets it estimated at its start.
idle = for node <- nodes, do: :erpc.call(node, :erlang, :spawn, [:timer, :sleep, [:infinity]])
{:ok, session} = Cluster.trace(nodes: nodes, pids: idle, messages: true)
{fill_us, [pids, pids_b | _]} = :timer.tc(fn -> Enum.map(nodes, &ClusterBench.fill(&1, n)) end)
{:ok, _} = Cluster.stop_trace(session)
stored = for node <- nodes, do: :erpc.call(node, DataAccess, :stats, []).retained
p = hd(pids)

IO.puts(
  "cluster bench — #{System.schedulers_online()} schedulers, OTP #{System.otp_release()}; " <>
    "3 nodes on this machine, stored #{inspect(stored)} events (filled in #{div(fill_us, 1_000_000)} s)\n"
)

expected = length(Query.select(pid: p))
{:ok, merged} = Cluster.query([pid: p], nodes: nodes)
^expected = length(merged)

single = ClusterBench.med_us(fn -> Query.select(pid: p) end)
with_session = ClusterBench.med_us(fn -> {:ok, _} = Cluster.query([pid: p], session: session) end)
estimating = ClusterBench.med_us(fn -> {:ok, _} = Cluster.query([pid: p], nodes: nodes) end)

IO.puts(
  "select(pid:) returning #{expected} of #{hd(stored)} on the node holding the pid: " <>
    "#{Float.round(single / 1000, 1)} ms\n" <>
    "Cluster.query(pid:) over 3 nodes, session: (its offsets): #{Float.round(with_session / 1000, 1)} ms " <>
    "-> #{Float.round(with_session / single, 2)}x the single-node time (target <= 3x)\n" <>
    "Cluster.query(pid:) over 3 nodes, nodes: (offsets estimated per query): " <>
    "#{Float.round(estimating / 1000, 1)} ms -> #{Float.round(estimating / single, 2)}x\n" <>
    "clock offsets at session start: " <>
    Enum.map_join(session.offsets, ", ", fn {node, {off, err}} ->
      "#{node} #{off} ns ± #{err} ns"
    end)
)

# The same for a pid on another node: its events cross the distribution.
pb = hd(pids_b)

remote_single =
  ClusterBench.median(
    for _ <- 1..5, do: :erpc.call(b, :timer, :tc, [Query, :select, [[pid: pb]]]) |> elem(0)
  )

remote_cluster =
  ClusterBench.med_us(fn -> {:ok, _} = Cluster.query([pid: pb], session: session) end)

IO.puts(
  "select(pid:) on #{b} for one of its pids, timed there: #{Float.round(remote_single / 1000, 1)} ms; " <>
    "Cluster.query(pid:) from here: #{Float.round(remote_cluster / 1000, 1)} ms " <>
    "-> #{Float.round(remote_cluster / remote_single, 2)}x (target <= 3x)"
)

# Message-heavy: GenServer calls to an Agent on b, traced on both sides.
# The flag lasts as long as the process that set it: here this one, on the
# peer a process left waiting.
:erlang.system_flag(:scheduler_wall_time, true)
hold = "(:erlang.system_flag(:scheduler_wall_time, true); Process.sleep(:infinity))"
Node.spawn(b, Code, :eval_string, [hold])
Process.sleep(100)

rounds = String.to_integer(System.get_env("BENCH_CLUSTER_ROUNDS", "50000"))
# A node's first round takes fresh memory for its buffers (page faults);
# later rounds, as every periodic round after a node's first, reuse them.
ClusterBench.Chatty.run(b, rounds, "first session (the round's buffers are new)")
ClusterBench.Chatty.run(b, rounds, "second session (the round reuses its buffers)")
