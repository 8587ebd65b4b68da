# ElixirScope cluster demo: three nodes on this machine (this VM and two
# :peer nodes over loopback distribution) run a small bank, the teller on
# this node, the accounts on the second, the ledger on the third. One
# cluster trace session records them; the demo prints one request's causal
# chain across the nodes and the message flow between them, each message
# linked to its receive on the other node.
#
# Run: ./setup.sh demo-cluster   (or mix run bench/demo_cluster.exs)
Code.require_file("../test/support/cluster_nodes.ex", __DIR__)
bank = Path.expand("cluster_bank.ex", __DIR__)
Code.require_file(bank)

alias ElixirScope.{Cluster, ClusterNodes}

Logger.configure(level: :warning)
ClusterNodes.distribute!("teller")
{_, accounts_node} = ClusterNodes.start_peer(:accounts)
{_, ledger_node} = ClusterNodes.start_peer(:ledger)
for node <- [accounts_node, ledger_node], do: :erpc.call(node, Code, :require_file, [bank])

{:ok, ledger} = :erpc.call(ledger_node, ClusterBank.Ledger, :start, [])
{:ok, accounts} = :erpc.call(accounts_node, ClusterBank.Accounts, :start, [ledger_node])
teller = ClusterBank.Teller.start(accounts_node)
short = fn node -> node |> Atom.to_string() |> String.split("@") |> hd() end

IO.puts("""
== ElixirScope cluster demo ==
nodes: #{short.(node())} (teller #{inspect(teller)}), #{short.(accounts_node)} (accounts #{inspect(accounts)}), #{short.(ledger_node)} (ledger #{inspect(ledger)})
""")

{:ok, session} =
  Cluster.trace(
    nodes: [node(), accounts_node, ledger_node],
    pids: [teller, accounts, ledger],
    calls: [ClusterBank.Teller, ClusterBank.Accounts, ClusterBank.Ledger],
    messages: true
  )

results =
  for {from, to, amount} <- [{:alice, :bob, 120}, {:bob, :alice, 30}, {:bob, :alice, 999}],
      do: {from, to, amount, ClusterBank.Teller.request(teller, from, to, amount)}

# Stops every node's part, then links the messages between the nodes.
{:ok, per_node} = Cluster.stop_trace(session, link: false)
{:ok, counts} = Cluster.link(session)

for {from, to, amount, result} <- results,
    do: IO.puts("transfer #{from} -> #{to} #{amount}: #{inspect(result)}")

IO.puts(
  "\nrecorded: " <>
    Enum.map_join(per_node, ", ", fn {n, info} -> "#{short.(n)} #{info.events} events" end) <>
    "; #{counts.linked} messages linked across nodes, #{counts.unlinked} unlinked\n"
)

{:ok, events} = Cluster.query([], session: session)

[{_, first_change} | _] =
  for {^ledger_node, e} <- events, e.event.type == :state_change, do: {ledger_node, e}

describe = fn e ->
  ev = e.event

  case ev.type do
    t when t in [:function_call, :function_return] ->
      "#{t} #{inspect(ev.module)}.#{ev.function}/#{ev.arity}"

    t when t in [:message_send, :message_receive] ->
      "#{t} #{inspect(ev.data, limit: 4, printable_limit: 30)}"

    :state_change ->
      "state_change #{inspect(ev.data, limit: 6)}"

    t ->
      "#{t}"
  end
end

IO.puts("== The ledger's first entry, traced back to its cause across the nodes ==")
chain = Cluster.get_correlation_chain({ledger_node, first_change.event.id}, session: session)
t0 = chain |> hd() |> elem(1) |> then(& &1.event.timestamp)

for {n, e} <- chain do
  remote = for {k, {rn, id}} <- e.links, do: "#{k} #{short.(rn)}##{id}"
  remote = if remote == [], do: "", else: "   <- " <> Enum.join(remote, ", ")
  us = div(e.event.timestamp - t0, 1000)

  IO.puts(
    "  +#{String.pad_leading("#{us}", 5)} µs  #{String.pad_trailing(short.(n), 12)} " <>
      "#{inspect(e.event.pid)} #{describe.(e)}#{remote}"
  )
end

IO.puts("\n== Messages between the nodes (send -> receive) ==")

for {n, e} <- events, {:receives, {sn, sid}} <- e.links do
  IO.puts(
    "  #{short.(sn)}##{sid} -> #{short.(n)}##{e.event.id}  confidence #{e.correlation_confidence}  " <>
      inspect(e.event.data, limit: 4, printable_limit: 30)
  )
end
