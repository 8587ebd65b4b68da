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
  #
  # While a session runs, this process starts its link rounds (`link/3`,
  # one at a time, in a process of their own) and names this node in the
  # session's store, so messages crossing nodes are set aside; a stop
  # answers once the round in progress is done, so the caller's final
  # round sees every half.
  use GenServer

  alias ElixirScope.{CorrelatedEvent, Native, Tracer}

  def start_link(_), do: GenServer.start_link(__MODULE__, :ok, name: __MODULE__)

  @doc "`:ok` when elixir_scope runs on this node."
  def ping do
    if Process.whereis(__MODULE__), do: :ok, else: {:error, :not_running}
  end

  @doc "The BEAM's monotonic time (ns) here, for clock offset estimates."
  def now, do: System.monotonic_time(:nanosecond)

  @doc """
  Starts this node's session of cluster session `id`; with `link` as
  `{nodes, every_ms}`, runs a link round (`link/3`) among `nodes` every
  `every_ms` while the session runs.
  """
  def start_trace(id, opts, link \\ nil),
    do: GenServer.call(__MODULE__, {:start, id, opts, link})

  @doc """
  Stops this node's session of `id` and flushes its pipeline, once its
  link round in progress (if any) is done: `{:ok, summary}` or `{:error,
  :unknown_session}`.
  """
  def stop_trace(id), do: GenServer.call(__MODULE__, {:stop, id})

  @doc "This node's session counters for `id`."
  def trace_info(id) do
    case :ets.lookup(__MODULE__, id) do
      [{^id, session, _}] -> {:ok, Tracer.info(session)}
      [] -> {:error, :unknown_session}
    end
  end

  @doc """
  Hands over the messages to node `to` sent here and not handed over yet
  (an encoded `SendBatch`, see `elixir_scope_core::cross_node::wire`):
  with `settle`, only those sent more than a second ago.
  """
  def take_sends(to, settle, opts),
    do: Native.cross_node_take_sends(store(opts), to, cutoff(settle))

  # How long a send may take to reach its node's store: while a session
  # runs, a round takes only the halves older than this (see
  # `elixir_scope_core::cross_node::matcher`).
  @settle_ns 1_000_000_000
  # Takes every half (no monotonic time reaches it).
  @all 0x7FFF_FFFF_FFFF_FFFF

  defp cutoff(true), do: now() - @settle_ns
  defp cutoff(false), do: @all

  @doc """
  One exchange round on this node for cluster session `id`: takes the
  sends for it from the other `nodes`, pairs them with its receives from
  them, links both sides. While the session runs here, the round takes
  only halves more than a second old: its receives, and the sends each
  other node sent more than a second before it was asked, which is after
  this node fixed its own cutoff, so every send that came before a
  receive taken (and reached its store within a second) is among them.
  Returns `%{linked: n, waiting: m, missing: nodes}`: receives linked
  now, receives still waiting for their send (or to be taken), nodes that
  did not answer.
  """
  def link(id, nodes, opts) do
    others = List.delete(nodes, node())
    settle = running?(id)
    settled = cutoff(settle)
    taken = multicall(others, :take_sends, fn _ -> [node(), settle, opts] end)
    inbound = for {node, {:ok, batch}} <- taken, do: {node, batch}
    {backs, linked, waiting} = Native.cross_node_link(store(opts), inbound, registered(), settled)
    backs = Map.new(backs)
    backed = multicall(Map.keys(backs), :link_back, &[node(), Map.fetch!(backs, &1), opts])
    missing = for {node, {:error, _}} <- taken ++ backed, uniq: true, do: node
    %{linked: linked, waiting: waiting, missing: missing}
  end

  defp running?(id) do
    match?({:ok, %{running: true}}, trace_info(id))
  end

  @doc "Links this node's sends to their receives on `node` (link backs from its `link/3`)."
  def link_back(node, backs, opts),
    do: Native.cross_node_link_back(store(opts), node, backs)

  # Calls `fun` of this module on `nodes` at once, with the arguments
  # `args_of.(node)`: [{node, {:ok, result} | {:error, reason}}].
  defp multicall(nodes, fun, args_of) do
    requests =
      for node <- nodes, do: {node, :erpc.send_request(node, __MODULE__, fun, args_of.(node))}

    for {node, request} <- requests, do: {node, response(request)}
  end

  defp response(request) do
    {:ok, :erpc.receive_response(request, 15_000)}
  catch
    kind, reason -> {:error, {kind, reason}}
  end

  defp registered do
    for name <- Process.registered(), pid = Process.whereis(name), is_pid(pid), do: {name, pid}
  end

  defp store(opts), do: ElixirScope.Storage.DataAccess.store(opts)

  @stream_chunk 1_000

  @doc """
  `Query.select/2` here for `Cluster.query/2`, sent to `to` (a pid or an
  alias) as flat tuples (see `compact/1`) as they are read, so the caller
  makes structs of one chunk while the next is read here: `{ref, {:chunk,
  tuples}}`s (of #{@stream_chunk} events unless `chunk_size:` says
  otherwise), then `{ref, :done}`. The tuples are built natively and cross
  the distribution several times faster than structs (maps repeat their
  keys in the external format); a `match:` filter runs in Elixir, so its
  events come as one chunk.
  """
  def stream_select(to, ref, filter, opts) do
    if Keyword.has_key?(filter, :match) do
      events = filter |> ElixirScope.Query.select(opts) |> Enum.map(&compact/1)
      send(to, {ref, {:chunk, events}})
    else
      filter
      |> ElixirScope.Query.compact_chunks(Keyword.put_new(opts, :chunk_size, @stream_chunk))
      |> Enum.each(&send(to, {ref, {:chunk, &1}}))
    end

    send(to, {ref, :done})
  end

  @doc """
  A `%CorrelatedEvent{}` as the flat tuple `stream_select/4` sends (for a
  `match:` filter, which runs in Elixir); `Native.expand_compact/3` makes
  the structs again.
  """
  def compact(%CorrelatedEvent{event: e} = c) do
    {e.id, e.type, e.pid, e.timestamp, e.wall_time, e.module, e.function, e.arity, e.data, e.peer,
     c.correlation_id, c.parent_id, c.root_id, c.links, c.correlation_type, c.correlated_at,
     c.correlation_confidence}
  end

  @doc "`Query.call_stat/2` here (for `Cluster.call_stat/2`)."
  def call_stat(key, opts), do: ElixirScope.Query.call_stat(key, opts)

  @impl true
  def init(:ok) do
    :ets.new(__MODULE__, [:named_table, :protected, read_concurrency: true])
    # owners: owner pid => monitor; rounds: session id => its link rounds;
    # naming: the session that named this node in its store, and the store.
    {:ok, %{owners: %{}, rounds: %{}, naming: nil}}
  end

  @impl true
  def handle_call({:start, id, opts, link}, _from, state) do
    owner = Keyword.fetch!(opts, :owner)
    store_opts = Keyword.take(opts, [:pipeline])

    case Process.whereis(ElixirScope.Tracer.Server) do
      # One session at a time: leave the running one's exchange alone.
      server when is_pid(server) ->
        {:reply, {:error, {:session_active, server}}, state}

      nil ->
        # Messages to and from other nodes are set aside for `link/3` from
        # now on (the tracer takes their fingerprints from its start).
        Native.cross_node_set_local(store(store_opts), node())

        case Tracer.start(opts) do
          {:ok, session} ->
            :ets.insert(__MODULE__, {id, session, owner})
            owners = Map.put_new_lazy(state.owners, owner, fn -> Process.monitor(owner) end)
            rounds = schedule(state.rounds, id, link, store_opts)
            {:reply, :ok, %{state | owners: owners, rounds: rounds, naming: {id, store_opts}}}

          {:error, _} = error ->
            Native.cross_node_forget_local(store(store_opts))
            {:reply, error, state}
        end
    end
  end

  def handle_call({:stop, id}, from, state) do
    case :ets.lookup(__MODULE__, id) do
      [{^id, session, _}] ->
        stopped = Tracer.stop(session)
        # What the session captured is stored before the caller queries;
        # what crosses nodes from now on is not the session's.
        _ = ElixirScope.flush(5_000, pipeline: session.options.pipeline)
        state = forget_local(state, id)

        case Map.get(state.rounds, id) do
          %{task: task, stopping: nil} = r when is_pid(task) ->
            # The caller links next: answer once this round is done.
            {:noreply, put_in(state.rounds[id], %{r | stopping: {from, stopped}})}

          %{task: task} when is_pid(task) ->
            {:reply, stopped, state}

          _ ->
            {:reply, stopped, %{state | rounds: Map.delete(state.rounds, id)}}
        end

      [] ->
        {:reply, {:error, :unknown_session}, state}
    end
  end

  @impl true
  def handle_info({:round, id}, state) do
    case Map.get(state.rounds, id) do
      %{stopping: nil} = r ->
        if running?(id) do
          Process.send_after(self(), {:round, id}, r.every)
          {:noreply, put_in(state.rounds[id], start_round(id, r))}
        else
          {:noreply, %{state | rounds: Map.delete(state.rounds, id)}}
        end

      _ ->
        {:noreply, state}
    end
  end

  def handle_info({:DOWN, _, :process, pid, _}, state) do
    case Enum.find(state.rounds, fn {_, r} -> r.task == pid end) do
      {id, %{stopping: {from, stopped}}} ->
        GenServer.reply(from, stopped)
        {:noreply, %{state | rounds: Map.delete(state.rounds, id)}}

      {id, r} ->
        {:noreply, put_in(state.rounds[id], %{r | task: nil})}

      nil ->
        # The owner went down: its sessions stop (the tracer sees to it)
        # and are forgotten here.
        state =
          :ets.match_object(__MODULE__, {:_, :_, pid})
          |> Enum.reduce(state, fn {id, _, _}, state -> forget_local(state, id) end)

        :ets.match_delete(__MODULE__, {:_, :_, pid})
        {:noreply, %{state | owners: Map.delete(state.owners, pid)}}
    end
  end

  # Stops setting messages aside if session `id` is the one that named
  # this node (a later session may have since).
  defp forget_local(%{naming: {id, store_opts}} = state, id) do
    Native.cross_node_forget_local(store(store_opts))
    %{state | naming: nil}
  end

  defp forget_local(state, _id), do: state

  defp schedule(rounds, _id, nil, _store_opts), do: rounds

  defp schedule(rounds, id, {nodes, every}, store_opts) do
    Process.send_after(self(), {:round, id}, every)
    Map.put(rounds, id, %{nodes: nodes, every: every, opts: store_opts, task: nil, stopping: nil})
  end

  # One round at a time: a round still running when the next is due
  # lets it pass.
  defp start_round(_id, %{task: task} = r) when is_pid(task), do: r

  defp start_round(id, r) do
    {task, _} = spawn_monitor(fn -> link(id, r.nodes, r.opts) end)
    %{r | task: task}
  end
end
