# ElixirScope demo: trace a small live system with no instrumentation,
# then show what the native pipeline reconstructed from the raw trace
# events: a request's call tree across processes, the message flow, one
# server's state changes, a crash and its restart, and the pipeline's stats.
#
# Run: ./setup.sh demo   (or mix run bench/demo.exs)
require Logger

defmodule Demo.Ledger do
  @moduledoc "Append-only log of transfers."
  use GenServer
  def start_link(_), do: GenServer.start_link(__MODULE__, [], name: __MODULE__)
  def record(entry), do: GenServer.call(__MODULE__, {:record, entry})
  @impl true
  def init(log), do: {:ok, log}
  @impl true
  def handle_call({:record, entry}, _from, log), do: {:reply, length(log) + 1, [entry | log]}
end

defmodule Demo.Alerts do
  @moduledoc "Counts large transfers; its backend fails above 1000."
  use GenServer
  def start_link(_), do: GenServer.start_link(__MODULE__, 0, name: __MODULE__)
  def notify(transfer), do: GenServer.cast(__MODULE__, {:notify, transfer})
  @impl true
  def init(n), do: {:ok, n}
  @impl true
  def handle_cast({:notify, {_, _, amount}}, _n) when amount > 1000,
    do: raise("alert backend unreachable")

  def handle_cast({:notify, {_, _, amount}}, n) when amount >= 100, do: {:noreply, n + 1}
  def handle_cast({:notify, _}, n), do: {:noreply, n}
end

defmodule Demo.Accounts do
  @moduledoc "Balances; a transfer is recorded in the ledger and reported to alerts."
  use GenServer

  def start_link(_),
    do: GenServer.start_link(__MODULE__, %{alice: 2000, bob: 300, carol: 50}, name: __MODULE__)

  def transfer(from, to, amount), do: GenServer.call(__MODULE__, {:transfer, from, to, amount})
  @impl true
  def init(balances), do: {:ok, balances}

  @impl true
  def handle_call({:transfer, from, to, amount}, _from, balances) do
    case withdraw(balances, from, amount) do
      {:ok, balances} ->
        balances = deposit(balances, to, amount)
        entry = Demo.Ledger.record({from, to, amount})
        Demo.Alerts.notify({from, to, amount})
        {:reply, {:ok, entry}, balances}

      {:error, _} = refused ->
        {:reply, refused, balances}
    end
  end

  defp withdraw(balances, who, amount) do
    if Map.fetch!(balances, who) >= amount,
      do: {:ok, Map.update!(balances, who, &(&1 - amount))},
      else: {:error, :insufficient_funds}
  end

  defp deposit(balances, who, amount), do: Map.update!(balances, who, &(&1 + amount))
end

defmodule Demo.Teller do
  @moduledoc "A client: serves a queue of transfer requests."
  def serve(requests), do: Enum.map(requests, fn {f, t, a} -> transfer(f, t, a) end)
  def transfer(from, to, amount), do: Demo.Accounts.transfer(from, to, amount)
end

defmodule Demo.Report do
  @moduledoc "Renders the stored, correlated events."

  def run(events, names) do
    by_id = Map.new(events, &{&1.event.id, &1})

    link_index = fn kind ->
      for ev <- events, {^kind, target} <- ev.links, reduce: %{} do
        acc -> Map.update(acc, target, [ev], &(&1 ++ [ev]))
      end
    end

    %{
      events: events,
      by_id: by_id,
      receives: link_index.(:receives),
      caused_by: link_index.(:caused_by),
      names: names
    }
  end

  def who(r, pid) when is_pid(pid), do: Map.get(r.names, pid) || registered(pid)
  def who(_r, name) when is_atom(name), do: inspect(name)
  def who(_r, {name, pid}) when is_atom(name) and is_pid(pid), do: inspect(name)
  def who(_r, _alias), do: "(reply alias)"

  defp registered(pid) do
    case Process.info(pid, :registered_name) do
      {:registered_name, name} -> inspect(name)
      _ -> inspect(pid)
    end
  end

  # GenServer protocol messages, shown as what they mean.
  def msg({:"$gen_call", _from, request}, width), do: "call " <> short(request, width - 5)
  def msg({:"$gen_cast", request}, width), do: "cast " <> short(request, width - 5)

  def msg({[:alias | ref], reply}, width) when is_reference(ref),
    do: "reply " <> short(reply, width - 6)

  def msg(other, width), do: short(other, width)

  def short(term, width \\ 60) do
    s = inspect(term, limit: 6, printable_limit: 40, width: :infinity)
    if String.length(s) > width, do: String.slice(s, 0, width - 1) <> "…", else: s
  end

  # --- message flow ------------------------------------------------------

  def message_flow(r, limit) do
    sends = Enum.filter(r.events, &(&1.event.type == :message_send))

    for {s, i} <- Enum.with_index(Enum.take(sends, limit), 1) do
      e = s.event

      received =
        case Map.get(r.receives, e.id, []) do
          [rcv | _] ->
            "received by #{who(r, rcv.event.pid)} (##{rcv.event.id}, confidence #{rcv.correlation_confidence})"

          [] ->
            "not received by a traced process"
        end

      to = who(r, e.peer)

      IO.puts(
        "  #{String.pad_leading(to_string(i), 2)}. #{String.pad_trailing(who(r, e.pid), 9)}→ " <>
          "#{String.pad_trailing(to, 14)} #{String.pad_trailing(msg(e.data, 50), 51)} #{received}"
      )
    end

    if length(sends) > limit, do: IO.puts("  … #{length(sends) - limit} more")
  end

  # --- state changes -----------------------------------------------------

  def state_changes(r, pid) do
    for %{event: %{type: :state_change, pid: ^pid} = e} = c <- r.events do
      cause =
        with [{:caused_by, rid}] <- Keyword.take(c.links, [:caused_by]),
             %{event: rcv} <- r.by_id[rid] do
          "handling #{msg(rcv.data, 50)} from #{who(r, rcv.peer)}"
        else
          _ -> "(cause not traced)"
        end

      IO.puts("  ##{e.id} #{cause}")
      IO.puts("       #{short(e.data.old, 70)}  ⇒  #{short(e.data.new, 70)}")
    end
  end
end

Logger.configure(level: :emergency)

{:ok, sup} =
  Supervisor.start_link([Demo.Ledger, Demo.Alerts, Demo.Accounts], strategy: :one_for_one)

parent = self()

teller =
  spawn(fn ->
    receive do
      {:serve, requests} -> send(parent, {:served, Demo.Teller.serve(requests)})
    end
  end)

label = fn mod -> mod |> Module.split() |> List.last() |> String.downcase() end
children = for {mod, pid, _, _} <- Supervisor.which_children(sup), do: {pid, label.(mod)}
server_pids = Enum.map(children, &elem(&1, 0))

{:ok, session} =
  ElixirScope.trace(
    pids: [sup, teller | server_pids],
    descendants: true,
    calls: [Demo.Teller, Demo.Accounts, Demo.Ledger, Demo.Alerts],
    messages: true,
    procs: true,
    max_events: 10_000
  )

IO.puts("""

ElixirScope demo — a bank with three GenServers under a supervisor and a
teller process, traced live (no instrumentation in their code):

  #{inspect(session)}
""")

requests = [
  {:alice, :bob, 50},
  {:bob, :carol, 120},
  {:alice, :carol, 1500},
  {:carol, :alice, 900}
]

send(teller, {:serve, requests})
results = receive do: ({:served, results} -> results)
# Let the supervisor restart the alerts server the third transfer crashed.
Process.sleep(50)
{:ok, info} = ElixirScope.stop_trace(session)
:ok = ElixirScope.flush()

IO.puts("Teller served #{length(requests)} transfers: #{inspect(results)}\n")

pids =
  [sup, teller | server_pids] ++
    for(
      %{event: %{type: :process_spawn, peer: child}} <-
        ElixirScope.Storage.DataAccess.query_by_pid(sup),
      do: child
    )

events =
  pids
  |> Enum.uniq()
  |> Enum.flat_map(&ElixirScope.Storage.DataAccess.query_by_pid(&1, limit: :infinity))
  |> Enum.sort_by(& &1.event.id)

# Children started after the trace began (restarts) are named "<server>#2".
restarted =
  for {mod, pid, _, _} <- Supervisor.which_children(sup),
      pid not in server_pids,
      do: {pid, label.(mod) <> "#2"}

names = Map.new([{teller, "teller"}, {sup, "sup"}, {self(), "demo"}] ++ children ++ restarted)

r = Demo.Report.run(events, names)

big =
  Enum.find(events, fn %{event: e} ->
    e.type == :function_call and e.function == :transfer and e.module == Demo.Teller and
      e.data == [:alice, :carol, 1500]
  end)

IO.puts(
  "── 1. Call tree of one request: Teller.transfer(:alice, :carol, 1500), across processes ──"
)

ElixirScope.print_call_tree(big.event.id, names: names)

IO.puts("\n── 2. Message flow, in order ──")
Demo.Report.message_flow(r, 24)

IO.puts(
  "\n── 3. State changes of the accounts server, each tied to the message that caused it ──"
)

Demo.Report.state_changes(r, Process.whereis(Demo.Accounts))

IO.puts("\n── 4. Crash and restart ──")

for %{event: e} <- events, e.type in [:process_exit, :process_spawn], e.pid in pids do
  case e.type do
    :process_exit ->
      IO.puts("  #{Demo.Report.who(r, e.pid)} exited: #{Demo.Report.short(e.data, 80)}")

    :process_spawn ->
      IO.puts(
        "  #{Demo.Report.who(r, e.pid)} spawned #{Demo.Report.who(r, e.peer)} (#{Demo.Report.short(e.data, 60)}), traced too (descendants: true)"
      )
  end
end

IO.puts("\n── 5. Pipeline ──")
s = ElixirScope.stats()
p = ElixirScope.Capture.PipelineManager.get_pipeline_stats()
m = ElixirScope.EventCorrelator.metrics()

IO.puts("""
  trace session: #{info.events} events captured (+#{info.state_changes} state changes derived), #{info.dropped} dropped, stopped: #{info.stopped_because}
  pipeline: ingested #{s.ingested}, stored #{s.stored}, dropped #{s.dropped_total}, queued #{s.queued}, workers #{s.workers}
  correlation: success rate #{Float.round(m.success_rate * 100, 1)}%, ring→store latency p50 #{Float.round(p.latency_p50_ms, 3)} ms, p99 #{Float.round(p.latency_p99_ms, 3)} ms
""")
