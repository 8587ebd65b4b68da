# The bank of the cluster demo (bench/demo_cluster.exs), loaded on every
# node: a teller on one node, the accounts on a second, the ledger on a third.

defmodule ClusterBank.Ledger do
  @moduledoc "Append-only log of transfers (registered; called as {name, node})."
  use GenServer
  def start, do: GenServer.start(__MODULE__, [], name: __MODULE__)
  def record(node, entry), do: GenServer.call({__MODULE__, node}, {:record, entry})
  @impl true
  def init(log), do: {:ok, log}
  @impl true
  def handle_call({:record, entry}, _from, log), do: {:reply, length(log) + 1, [entry | log]}
end

defmodule ClusterBank.Accounts do
  @moduledoc "Balances; each transfer is recorded in the ledger on another node."
  use GenServer

  def start(ledger_node),
    do: GenServer.start(__MODULE__, {%{alice: 500, bob: 100}, ledger_node}, name: __MODULE__)

  def transfer(node, from, to, amount),
    do: GenServer.call({__MODULE__, node}, {:transfer, from, to, amount})

  @impl true
  def init(state), do: {:ok, state}

  @impl true
  def handle_call({:transfer, from, to, amount}, _from, {balances, ledger}) do
    if balances[from] >= amount do
      balances = balances |> Map.update!(from, &(&1 - amount)) |> Map.update!(to, &(&1 + amount))
      entry = ClusterBank.Ledger.record(ledger, {from, to, amount})
      {:reply, {:ok, entry}, {balances, ledger}}
    else
      {:reply, {:error, :insufficient_funds}, {balances, ledger}}
    end
  end
end

defmodule ClusterBank.Teller do
  @moduledoc "Serves transfer requests by calling the accounts on another node."
  def start(accounts_node), do: spawn(fn -> loop(accounts_node) end)

  def request(teller, from, to, amount) do
    send(teller, {:transfer, self(), from, to, amount})
    receive do: ({:done, result} -> result)
  end

  defp loop(accounts) do
    receive do
      {:transfer, reply_to, from, to, amount} ->
        send(reply_to, {:done, handle(accounts, from, to, amount)})
        loop(accounts)
    end
  end

  def handle(accounts, from, to, amount),
    do: ClusterBank.Accounts.transfer(accounts, from, to, amount)
end
