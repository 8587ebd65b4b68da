defmodule ElixirScope.Cluster.Local do
  @moduledoc false
  # The node side of `ElixirScope.Cluster`: what the cluster layer calls on
  # each node over `:erpc`, and the process that keeps this node's part of
  # cluster sessions.
  #
  # A session's `%ElixirScope.Tracer.Session{}` holds a native resource
  # that only means something on its node, so it stays here, keyed by the
  # cluster session's id; the caller holds the id. A stopped session stays
  # readable (its counters) until its cluster owner goes down (its process
  # or its node): the tracer then stops it (owner_down) if it still runs,
  # and it is forgotten here.
  use GenServer

  alias ElixirScope.{CorrelatedEvent, Event, Tracer}
  alias ElixirScope.Cluster.Links

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

  @doc "The highest event id stored here (0 if none)."
  def last_id(opts) do
    case ElixirScope.Query.select([limit: 1], [order: :desc] ++ opts) do
      [e] -> e.event.id
      [] -> 0
    end
  end

  @doc """
  This node's message halves that crossed nodes, stored after event
  `after_id`: `{sends, receives}` as `ElixirScope.Cluster.Links` takes them.
  """
  def remote_halves(after_id, opts) do
    # Read as native flat tuples (see `compact/1`): no structs built.
    messages = fn type ->
      ElixirScope.Query.compact_stream([type: type, after: after_id], opts)
    end

    sends =
      for {id, _, pid, _, _, _, _, _, data, peer, _, _, _, _, _, _, _} <-
            messages.(:message_send),
          to = Links.destination(peer),
          do: {id, pid, to, :erlang.phash2(data)}

    receives =
      for {id, _, pid, _, _, _, _, _, data, peer, _, _, _, _, _, _, _} <-
            messages.(:message_receive),
          sender = Links.remote_sender(peer),
          do: {id, pid, sender, :erlang.phash2(data)}

    # Receivers are few: each one's registered name is asked once.
    names = receives |> Enum.map(&elem(&1, 1)) |> Enum.uniq() |> Map.new(&{&1, name(&1)})
    {sends, Enum.map(receives, fn {id, pid, s, fp} -> {id, pid, s, fp, names[pid]} end)}
  end

  defp name(pid) do
    case Process.info(pid, :registered_name) do
      {:registered_name, name} when is_atom(name) -> name
      _ -> nil
    end
  end

  @doc "Applies links to events on other nodes (see `Links.match/1`); how many took."
  def link_remote(links, opts),
    do: ElixirScope.Native.store_link_remote(ElixirScope.Storage.DataAccess.store(opts), links)

  @doc """
  `Query.select/2` here (for `Cluster.query/2`); with `compact: true` as
  flat tuples (see `compact/1`), built natively: they cross the
  distribution several times faster than structs (maps repeat their keys
  in the external format).
  """
  def select(filter, opts, compact)
  def select(filter, opts, false), do: ElixirScope.Query.select(filter, opts)

  def select(filter, opts, true) do
    if Keyword.has_key?(filter, :match),
      do: filter |> ElixirScope.Query.select(opts) |> Enum.map(&compact/1),
      else: filter |> ElixirScope.Query.compact_stream(opts) |> Enum.to_list()
  end

  @doc "A `%CorrelatedEvent{}` as the flat tuple `select/3` sends; `expand/2` makes it again."
  def compact(%CorrelatedEvent{event: e} = c) do
    {e.id, e.type, e.pid, e.timestamp, e.wall_time, e.module, e.function, e.arity, e.data, e.peer,
     c.correlation_id, c.parent_id, c.root_id, c.links, c.correlation_type, c.correlated_at,
     c.correlation_confidence}
  end

  @doc "The event `compact/1` gave, its timestamp moved by `-offset`."
  def expand(
        {id, type, pid, ts, wall, m, f, a, data, peer, cid, parent, root, links, ctype, cat,
         conf},
        offset
      ) do
    %CorrelatedEvent{
      event: %Event{
        id: id,
        timestamp: ts - offset,
        wall_time: wall,
        pid: pid,
        type: type,
        module: m,
        function: f,
        arity: a,
        data: data,
        peer: peer
      },
      correlation_id: cid,
      parent_id: parent,
      root_id: root,
      links: links,
      correlation_type: ctype,
      correlated_at: cat,
      correlation_confidence: conf
    }
  end

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
    case :ets.lookup(__MODULE__, id) do
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
