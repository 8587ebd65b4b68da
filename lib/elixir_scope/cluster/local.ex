defmodule ElixirScope.Cluster.Local do
  @moduledoc false
  # The node side of `ElixirScope.Cluster`: what the cluster layer calls on
  # each node over `:erpc`, and the process that keeps this node's part of
  # cluster sessions.
  #
  # A session's `%ElixirScope.Tracer.Session{}` holds a native resource
  # that only means something on its node, so it stays here, keyed by the
  # cluster session's id; the caller holds the id. Sessions whose cluster
  # owner goes down (its process or its node) are stopped by the tracer
  # itself (owner_down) and forgotten here.
  use GenServer

  alias ElixirScope.Tracer

  def start_link(_), do: GenServer.start_link(__MODULE__, :ok, name: __MODULE__)

  @doc "`:ok` when elixir_scope runs on this node."
  def ping do
    if Process.whereis(__MODULE__), do: :ok, else: {:error, :not_running}
  end

  @doc "The BEAM's monotonic time (ns) here, for clock offset estimates."
  def now, do: System.monotonic_time(:nanosecond)

  @doc "Starts this node's session of cluster session `id`."
  def start_trace(id, opts), do: GenServer.call(__MODULE__, {:start, id, opts})

  @doc """
  Stops this node's session of `id` and flushes its pipeline: `{:ok,
  summary}` or `{:error, :unknown_session}`.
  """
  def stop_trace(id), do: GenServer.call(__MODULE__, {:stop, id})

  @doc "This node's session counters for `id`."
  def trace_info(id) do
    case :ets.lookup(__MODULE__, id) do
      [{^id, session, _}] -> {:ok, Tracer.info(session)}
      [] -> {:error, :unknown_session}
    end
  end

  @doc "`Query.select/2` here (for `Cluster.query/2`)."
  def select(filter, opts), do: ElixirScope.Query.select(filter, opts)

  @doc "`Query.call_stat/2` here (for `Cluster.call_stat/2`)."
  def call_stat(key, opts), do: ElixirScope.Query.call_stat(key, opts)

  @impl true
  def init(:ok) do
    :ets.new(__MODULE__, [:named_table, :protected, read_concurrency: true])
    {:ok, %{}}
  end

  @impl true
  def handle_call({:start, id, opts}, _from, monitors) do
    owner = Keyword.fetch!(opts, :owner)

    case Tracer.start(opts) do
      {:ok, session} ->
        :ets.insert(__MODULE__, {id, session, owner})
        {:reply, :ok, Map.put_new_lazy(monitors, owner, fn -> Process.monitor(owner) end)}

      {:error, _} = error ->
        {:reply, error, monitors}
    end
  end

  def handle_call({:stop, id}, _from, monitors) do
    case :ets.take(__MODULE__, id) do
      [{^id, session, _}] ->
        stopped = Tracer.stop(session)
        # What the session captured is stored before the caller queries.
        _ = ElixirScope.flush(5_000, pipeline: session.options.pipeline)
        {:reply, stopped, monitors}

      [] ->
        {:reply, {:error, :unknown_session}, monitors}
    end
  end

  @impl true
  def handle_info({:DOWN, _, :process, owner, _}, monitors) do
    :ets.match_delete(__MODULE__, {:_, :_, owner})
    {:noreply, Map.delete(monitors, owner)}
  end
end
