defmodule ElixirScope.Traced do
  @moduledoc false
  # Real processes for the tracer tests.

  defmodule Counter do
    @moduledoc false
    use GenServer

    def start(n), do: GenServer.start(__MODULE__, n)

    @impl true
    def init(n), do: {:ok, n}

    @impl true
    def handle_call(:bump, _from, n), do: {:reply, n + 1, n + 1}
    def handle_call(:crash, _from, _n), do: raise("boom")
    def handle_call(:peek, _from, n), do: {:reply, n, n}

    @impl true
    def handle_cast({:add, k}, n), do: {:noreply, n + k}
  end

  defmodule Fib do
    @moduledoc false
    # Doubly recursive on purpose: the calls form a known tree.
    def fib(n) when n < 2, do: n
    def fib(n), do: fib(n - 1) + fib(n - 2)
  end

  defmodule Relay do
    @moduledoc false
    # Answers `:relay` calls and casts `{:add, 1}` onward to `next`.
    use GenServer

    def start(next), do: GenServer.start(__MODULE__, next)

    @impl true
    def init(next), do: {:ok, next}

    @impl true
    def handle_call(:relay, _from, next) do
      GenServer.cast(next, {:add, 1})
      {:reply, :relayed, next}
    end
  end

  defmodule Client do
    @moduledoc false
    def bump(server), do: GenServer.call(server, :bump)
    def relay(server), do: GenServer.call(server, :relay)

    def loop(0), do: :done
    def loop(n), do: loop(step(n))

    def step(n), do: n - 1
  end

  @doc """
  A client (a `runner/0`) and a `Counter` server, both traced into the
  private pipeline `p` with messages and the `Counter` and
  `Client.bump/1` calls (plus `extra_calls`); runs `work.(client, server)`
  in the client, then stops the session and flushes. The server is killed
  when the test ends. Returns `{server, client}`.
  """
  def traced_bank(p, work, extra_calls \\ []) do
    {:ok, server} = Counter.start(0)
    client = runner()

    {:ok, s} =
      ElixirScope.trace(
        pids: [server, client],
        calls: [Counter, {Client, :bump, 1} | extra_calls],
        messages: true,
        pipeline: p
      )

    work.(client, server)
    {:ok, _} = ElixirScope.stop_trace(s)
    :ok = ElixirScope.flush(5_000, pipeline: p)
    ExUnit.Callbacks.on_exit(fn -> Process.exit(server, :kill) end)
    {server, client}
  end

  @doc """
  `traced_bank/3` in a fresh private pipeline: the client bumps the
  server three times, then runs `Fib.fib(5)` (traced too). Returns
  `{pipeline, server, client}`.
  """
  def bank_with_fib do
    p = ElixirScope.TestEvents.private_pipeline()

    work = fn client, server ->
      for _ <- 1..3, do: run(client, fn -> Client.bump(server) end)
      run(client, fn -> Fib.fib(5) end)
    end

    {server, client} = traced_bank(p, work, [{Fib, :fib, 1}])
    {p, server, client}
  end

  @doc "A process that runs each function it is sent, replying `{:ran, result}`."
  def runner do
    spawn(fn -> run_loop() end)
  end

  defp run_loop do
    receive do
      {:run, from, fun} ->
        send(from, {:ran, fun.()})
        run_loop()
    end
  end

  @doc "A process that sends `msg` to `to` for each `{:send, to, msg}` it gets."
  def forwarder, do: spawn(fn -> forward_loop() end)

  defp forward_loop do
    receive do
      {:send, to, msg} ->
        send(to, msg)
        forward_loop()
    end
  end

  @doc "Runs `fun` in `runner` and waits for its result."
  def run(runner, fun) do
    send(runner, {:run, self(), fun})

    receive do
      {:ran, result} -> result
    after
      5_000 -> raise "runner did not answer"
    end
  end

  @doc """
  Run in another VM: writes one event naming the atom `name` (new there)
  into the default store, its payload `{atom, a pid}`, and saves the store
  to `path`.
  """
  def save_with_atom(path, name) do
    atom = String.to_atom(name)

    event = %ElixirScope.Event{
      type: :function_call,
      pid: self(),
      module: atom,
      function: :run,
      arity: 1,
      data: {atom, self()}
    }

    :ok = ElixirScope.Storage.DataAccess.write_batch([event])
    ElixirScope.save(path)
  end
end
