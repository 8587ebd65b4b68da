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
# Cluster.link/1 takes to link them (wall and CPU), per message event,
# against the time the workers took to drain them. A node's first round
# pays for fresh memory; three later ones reuse it (their medians are the
# figure: this machine is noisy). Then, three times, four times as many
# calls (a session of several seconds) with the default rounds, every
# second during the session and once at its stop (medians printed).
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
{:module, cpu_module, cpu_code, _} =
  defmodule ClusterBench.CPU do
    # The CPU time of this VM's threads (all, or those whose name holds
    # `named`), in ns: the kernel's accounting per thread (the first field
    # of its schedstat). (:prim_file, not File: no round trip through the
    # file server.)
    def thread_ns(named \\ "") do
      {:ok, tasks} = :prim_file.list_dir(~c"/proc/self/task")

      for task <- tasks,
          named == "" or String.contains?(read(task, ~c"comm"), named),
          reduce: 0 do
        sum ->
          sum +
            (read(task, ~c"schedstat")
             |> String.split()
             |> List.first("0")
             |> String.to_integer())
      end
    end

    defp read(task, file) do
      case :prim_file.read_file(~c"/proc/self/task/" ++ task ++ ~c"/" ++ file) do
        {:ok, text} -> text
        {:error, _} -> ""
      end
    end
  end

defmodule ClusterBench.Chatty do
  @busy "ElixirScope.Native.pipeline_stats(ElixirScope.Capture.PipelineManager.pipeline()).busy_ns"

  # A session of `rounds` calls from a process here to an Agent on `b`,
  # linked in one round after it (`link_every: false`), which is timed;
  # prints the figures under `label` and returns the CPU per event the
  # rounds' NIFs took on dirty schedulers.
  def one_round(b, rounds, label) do
    session = start(b, rounds, false)
    ambiguous_before = ambiguous(b)
    # Reading the counters costs CPU too: two reads back to back show how
    # much (the least of three tries), which is taken off.
    reading_ns = Enum.min(for _ <- 1..3, do: -cpu_ns(b) + cpu_ns(b))
    busy_before = cross_node(b, :busy_ns)
    cpu_before = cpu_ns(b)
    {link_us, {:ok, counts}} = :timer.tc(fn -> Cluster.link(session.cluster) end)
    link_cpu_ns = cpu_ns(b) - cpu_before - reading_ns
    link_busy_ns = cross_node(b, :busy_ns) - busy_before
    %{events: events, drain_ns: drain_ns} = session = stop(b, session)
    per_event = fn ns -> Float.round(ns / max(events, 1), 1) end
    share = fn ns, of -> Float.round(100 * ns / max(of, 1), 1) end

    IO.puts(
      "message-heavy, #{label}: #{header(session, rounds)}\n" <>
        "  Cluster.link: #{counts.linked} linked (#{ambiguous(b) - ambiguous_before} below " <>
        "confidence 1.0), #{counts.unlinked} unlinked in " <>
        "#{Float.round(link_us / 1000, 1)} ms = #{per_event.(link_us * 1000)} ns per event " <>
        "-> #{share.(link_us * 1000, drain_ns)}% of the drain's busy time (target <= 10%)\n" <>
        "  Cluster.link CPU, both nodes' threads: #{per_event.(link_cpu_ns)} ns per event " <>
        "-> #{share.(link_cpu_ns, drain_ns)}% of the drain's busy time, " <>
        "#{share.(link_cpu_ns, session.workers_ns)}% of its threads' CPU " <>
        "(reading the counters took #{div(reading_ns, 1000)} us, taken off)\n" <>
        "  Cluster.link's native steps, busy (as the drain's is counted): " <>
        "#{per_event.(link_busy_ns)} ns per event -> #{share.(link_busy_ns, drain_ns)}%"
    )

    %{
      wall: link_us * 1000 / max(events, 1),
      cpu: link_cpu_ns / max(events, 1),
      busy: link_busy_ns / max(events, 1),
      drain: drain_ns / max(events, 1),
      dirty: session.dirty_ns / max(events, 1)
    }
  end

  # The median of later rounds' figures (the machine is noisy).
  def summary(runs) do
    med = fn key -> runs |> Enum.map(& &1[key]) |> ClusterBench.median() end
    pct = fn key -> Float.round(100 * med.(key) / med.(:drain), 1) end

    IO.puts(
      "later rounds, medians of #{length(runs)}: drain busy #{Float.round(med.(:drain), 1)} ns " <>
        "per event; Cluster.link wall #{Float.round(med.(:wall), 1)} ns per event -> " <>
        "#{pct.(:wall)}%, CPU #{Float.round(med.(:cpu), 1)} ns per event -> #{pct.(:cpu)}% " <>
        "of the drain's busy time (target <= 10%); its native steps busy " <>
        "#{Float.round(med.(:busy), 1)} ns -> #{pct.(:busy)}%; the dirty schedulers' CPU " <>
        "over the session #{Float.round(med.(:dirty), 1)} ns -> #{pct.(:dirty)}%"
    )

    med.(:dirty)
  end

  # The same with the default rounds: every second while the session runs
  # (each links what is more than a second old) and one at its stop. The
  # session lasts several seconds, so the rounds during it do most of the
  # linking. Their CPU is mixed with the traced processes' on the
  # schedulers, but their NIFs alone run on dirty ones.
  def default_rounds(b, rounds, k) do
    {busy_before, linked_before} = {cross_node(b, :busy_ns), linked(b)}
    session = start(b, rounds, 1000)
    during = linked(b) - linked_before
    {:ok, _} = Cluster.stop_trace(session.cluster)
    %{events: events, drain_ns: drain_ns} = session = stop(b, session)
    busy = (cross_node(b, :busy_ns) - busy_before) / events
    dirty = session.dirty_ns / events

    IO.puts(
      "message-heavy, default rounds #{k} (every second while the session runs, and at its " <>
        "stop): #{header(session, rounds)}\n" <>
        "  #{linked(b) - linked_before} linked (#{during} by the rounds during the session); " <>
        "the rounds' native steps busy #{Float.round(busy, 1)} ns per event -> " <>
        "#{Float.round(100 * busy * events / drain_ns, 1)}% of the drain's busy time; " <>
        "their NIFs' CPU on dirty schedulers #{Float.round(dirty, 1)} ns per event"
    )

    %{busy: busy, drain: drain_ns / events, dirty: dirty}
  end

  def default_summary(runs, one_round_dirty) do
    med = fn key -> runs |> Enum.map(& &1[key]) |> ClusterBench.median() end

    IO.puts(
      "default rounds, medians of #{length(runs)}: native steps busy " <>
        "#{Float.round(med.(:busy), 1)} ns per event -> " <>
        "#{Float.round(100 * med.(:busy) / med.(:drain), 1)}% of the drain's busy time; " <>
        "dirty-scheduler CPU #{Float.round(med.(:dirty), 1)} ns (one round after a session: " <>
        "#{Float.round(one_round_dirty, 1)} ns)"
    )
  end

  defp start(b, rounds, link_every) do
    {:ok, agent} = :erpc.call(b, Agent, :start, [:erlang, :abs, [0]])
    me = self()

    caller =
      spawn(fn ->
        receive do: (:go -> :ok)
        for _ <- 1..rounds, do: Agent.get(agent, :erlang, :abs, [])
        send(me, :done)
      end)

    {:ok, cluster} =
      Cluster.trace(
        nodes: [node(), b],
        pids: [caller, agent],
        messages: true,
        max_events: 4 * rounds + 100,
        link_every: link_every
      )

    # The drain cost: the time the two nodes' workers spend on the
    # session's events (correlate, index, store), from their busy
    # counters; and their threads' CPU, waking up and parking included.
    before = {busy(b), cpu_ns(b, "elixir_scope_wo"), cpu_ns(b, "dirty_cpu")}
    {run_us, _} = :timer.tc(fn -> send(caller, :go) && receive(do: (:done -> :ok)) end)
    {:ok, per_node} = Cluster.stop_trace(cluster, link: false)
    {busy_before, workers_before, _} = before

    %{
      cluster: cluster,
      agent: agent,
      before: before,
      run_us: run_us,
      drain_ns: busy(b) - busy_before,
      workers_ns: cpu_ns(b, "elixir_scope_wo") - workers_before,
      events: per_node |> Map.values() |> Enum.map(& &1.events) |> Enum.sum(),
      dropped: per_node |> Map.values() |> Enum.map(& &1.dropped) |> Enum.sum()
    }
  end

  # After the session's last round: the dirty schedulers' CPU since it
  # started.
  defp stop(b, session) do
    Process.exit(session.agent, :kill)
    Map.put(session, :dirty_ns, cpu_ns(b, "dirty_cpu") - elem(session.before, 2))
  end

  defp header(s, rounds) do
    per_event = fn ns -> Float.round(ns / max(s.events, 1), 1) end

    "#{rounds} GenServer calls: #{s.events} message events traced (dropped #{s.dropped}) " <>
      "in #{div(s.run_us, 1000)} ms\n" <>
      "  drain, both nodes' workers: busy #{per_event.(s.drain_ns)} ns per event " <>
      "(their threads' CPU, waking up and parking included: #{per_event.(s.workers_ns)} ns)"
  end

  defp busy(b) do
    Enum.sum(
      for node <- [node(), b], do: :erpc.call(node, Code, :eval_string, [@busy]) |> elem(0)
    )
  end

  defp ambiguous(b), do: cross_node(b, :ambiguous)
  defp linked(b), do: cross_node(b, :linked)

  defp cross_node(b, key) do
    Enum.sum(
      for n <- [node(), b],
          do: :erpc.call(n, ElixirScope.EventCorrelator, :metrics, []).cross_node[key]
    )
  end

  # Both nodes' threads' CPU time (the exchange runs on their schedulers,
  # dirty ones for its NIFs, and in their distribution).
  defp cpu_ns(b, named \\ "") do
    Enum.sum(for node <- [node(), b], do: :erpc.call(node, ClusterBench.CPU, :thread_ns, [named]))
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
{:module, _} = :erpc.call(b, :code, :load_binary, [cpu_module, ~c"cluster_bench_cpu", cpu_code])

rounds = String.to_integer(System.get_env("BENCH_CLUSTER_ROUNDS", "50000"))
# A node's first round takes fresh memory for its buffers (page faults);
# later rounds, as every periodic round after a node's first, reuse them.
ClusterBench.Chatty.one_round(b, rounds, "a first round (its buffers are new)")

dirty =
  for(
    k <- 1..3,
    do: ClusterBench.Chatty.one_round(b, rounds, "later round #{k} (it reuses its buffers)")
  )
  |> ClusterBench.Chatty.summary()

# Four times the calls: sessions of several seconds.
for(k <- 1..3, do: ClusterBench.Chatty.default_rounds(b, 4 * rounds, k))
|> ClusterBench.Chatty.default_summary(dirty)
