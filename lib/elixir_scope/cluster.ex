defmodule ElixirScope.Cluster do
  @moduledoc """
  Tracing and querying several nodes as one, over Erlang distribution.

  Every node runs its own elixir_scope (it is a dependency of the
  application); this module fans out with `:erpc`, with no transport and
  no collector of its own. A node that goes down during a session does not
  stop the others, and answers say which nodes did not answer rather than
  silently holding fewer events. Events are named `{node, id}` across
  nodes; `link/1` joins a send on one node to its receive on another, so
  `get_correlation_chain/2` and `chrome_trace/3` follow a request from
  node to node.

  ## One time base

  Each VM's monotonic clock has its own origin, so results are put on the
  calling node's clock: a node's offset is estimated from round trips
  (`clock_offsets/1`): with `t0` and `t1` read here around reading the
  node's clock `r`, the offset is `r - (t0 + t1) / 2`, wrong by at most
  half the round trip (the remote read happened somewhere inside it). Of
  five round trips the shortest is kept. On one host the offsets are
  exact up to that bound (tens of µs); across hosts whose clocks drift the
  bound holds at the moment of the estimate, which `trace/1` makes at
  session start.
  """

  alias ElixirScope.Cluster.{Local, Session}

  @type node_result(t) :: {:ok, t} | {:partial, t, [node()]}

  @rpc_timeout 15_000
  @link_every 1_000

  @doc """
  Starts a trace session on several nodes. Takes the options of
  `ElixirScope.trace/1` plus `nodes:` (a list of nodes, or `:connected`
  for `[node() | Node.list()]`, the default) and `link_every:` (ms, default
  1000: each node runs a `link/1` round for its receives that often while
  the session runs, so links appear during the session and what waits
  stays small; `false` links only at `stop_trace/2` or on `link/1`). The
  limits apply per node.

  `pids:` may be `:new`, `:existing` or `:all` (on every node) or pids on
  any of the nodes: each node then traces the pids that live on it, and a
  node with none of them is left out of the session (its `nodes` say which
  nodes trace).

  Returns `{:ok, %ElixirScope.Cluster.Session{}}`, or before anything
  starts `{:error, {:not_running, node}}` (no elixir_scope there),
  `{:error, {:nodedown, node}}` (unreachable), `{:error,
  {:pid_not_on_nodes, pid}}`, or the error a node's `ElixirScope.trace/1`
  gave as `{:error, {node, reason}}` (the nodes already started are then
  stopped).
  """
  @spec trace(keyword()) :: {:ok, Session.t()} | {:error, term()}
  def trace(opts) when is_list(opts) do
    {nodes, opts} = Keyword.pop(opts, :nodes, :connected)
    {every, opts} = Keyword.pop(opts, :link_every, @link_every)

    with {:ok, nodes} <- resolve_nodes(nodes),
         :ok <- check_link_every(every),
         {:ok, _} <- ElixirScope.Tracer.Options.parse(Keyword.put(opts, :pids, self())),
         {:ok, per_node} <- split_pids(nodes, Keyword.get(opts, :pids)),
         :ok <- all_running(Map.keys(per_node)) do
      nodes = Enum.filter(nodes, &Map.has_key?(per_node, &1))
      id = make_ref()
      offsets = clock_offsets(nodes)
      opts = Keyword.put(opts, :owner, self())
      store_opts = Keyword.take(opts, [:pipeline])
      started_at = System.monotonic_time(:nanosecond)

      started =
        Enum.reduce_while(nodes, {:ok, []}, fn node, {:ok, done} ->
          node_opts = Keyword.put(opts, :pids, Map.fetch!(per_node, node))

          link = if every, do: {nodes, every}

          case rpc(node, Local, :start_trace, [id, node_opts, link]) do
            {:ok, :ok} -> {:cont, {:ok, [node | done]}}
            {:ok, {:error, reason}} -> {:halt, {:error, {node, reason}, done}}
            {:error, reason} -> {:halt, {:error, {node, reason}, done}}
          end
        end)

      case started do
        {:ok, _} ->
          {:ok,
           %Session{
             id: id,
             nodes: nodes,
             offsets: offsets,
             started_at: started_at,
             store_opts: store_opts
           }}

        {:error, reason, done} ->
          Enum.each(done, &rpc(&1, Local, :stop_trace, [id]))
          {:error, reason}
      end
    end
  end

  def trace(opts), do: {:error, {:invalid_options, opts}}

  defp check_link_every(every) when every == false or (is_integer(every) and every > 0), do: :ok
  defp check_link_every(every), do: {:error, {:invalid_option, :link_every, every}}

  @doc """
  Stops the session on every node and flushes its pipeline there, so
  queries see everything captured, then links the messages between the
  nodes (`link/1`; `link: false` leaves that to a later `link/1`).
  Returns `{:ok, %{node => summary}}`, a summary being what
  `ElixirScope.stop_trace/1` gives there, or `{:error, :nodedown}` for a
  node that cannot be reached.
  """
  @spec stop_trace(Session.t(), keyword()) :: {:ok, %{node() => map() | {:error, term()}}}
  def stop_trace(%Session{} = s, opts \\ []) do
    stopped = per_node(s.nodes, fn node -> rpc(node, Local, :stop_trace, [s.id]) end)
    if Keyword.get(opts, :link, true), do: link(s)
    {:ok, stopped}
  end

  @doc """
  Links the session's messages across nodes: each send to a process on
  another node (a pid, `{name, node}`, or a process alias such as a
  `GenServer.call` reply) and its receive there. The receive gets
  `{:receives, {node, send_id}}` and the send `{:received_by, {node,
  receive_id}}`.

  From a session's start, the tracer takes the `phash2` of each message
  crossing nodes (the same on every node) and each node's workers set
  such messages aside as they store them. A round runs on every node at
  once: it takes the sends for it from the other nodes (one `:erpc` call
  per node, each a compact batch of ~7 bytes a send with node-independent
  keys), pairs them natively with its receives from those nodes and links
  both sides (one more call per sending node). Never one distribution
  message per event. A receive takes the first waiting send with the same
  message from its sender's node (the VM names a remote sender only by
  its node) to its pid or node (a send to a registered name counts as
  one to the name's holder): certain (confidence 1.0) when one process
  sent those candidates, else `1 / n` for `n` such processes, and not
  certain either while identical sends from several processes wait (see
  `elixir_scope_core::cross_node::matcher`).

  `stop_trace/1` runs a round once the nodes are flushed; call it during
  a session to link what is stored so far. Each round links what arrived
  since the last one; a receive whose send has not been stored yet waits
  for a later round, and while the session runs, so do receives younger
  than a second (a send from another process that would make their match
  uncertain may still be on its way into its node's store). Returns
  `{:ok, %{linked: n, unlinked: m}}`: receives
  linked in this round, and receives from another node still without
  their send (sent from a node, or at a time, the session did not trace),
  or `{:partial, counts, missing_nodes}`.
  """
  @spec link(Session.t()) ::
          node_result(%{linked: non_neg_integer(), unlinked: non_neg_integer()})
  def link(%Session{} = s) do
    answers =
      fan_out(s.nodes, @rpc_timeout, fn _ -> {Local, :link, [s.id, s.nodes, s.store_opts]} end)

    rounds = for {_, {:ok, round}} <- answers, do: round
    counts = %{linked: sum(rounds, :linked), unlinked: sum(rounds, :waiting)}
    missing = for(round <- rounds, node <- round.missing, do: {node, {:error, :nodedown}})
    answer(counts, answers ++ missing)
  end

  defp sum(maps, key), do: maps |> Enum.map(&Map.fetch!(&1, key)) |> Enum.sum()

  @doc """
  The chain of events leading to event `id` on `node`, root cause first,
  across nodes: `EventCorrelator.get_correlation_chain/2` on each node,
  continued from a receive linked to its send on another node (see
  `link/1`). `[{node, %CorrelatedEvent{}}]`, timestamps on this node's
  clock (as `query/2` gives them), empty when the event is not stored;
  `{:error, {:nodedown, node}}` when a node on the way cannot be reached.
  Options: `session:` (its clock offsets and pipeline; else offsets are
  estimated now) and `pipeline:` (on every node).
  """
  @spec get_correlation_chain({node(), pos_integer()}, keyword()) ::
          [{node(), ElixirScope.CorrelatedEvent.t()}] | {:error, term()}
  def get_correlation_chain({node, id}, opts \\ []) when is_atom(node) and is_integer(id) do
    {offsets, store_opts} =
      case Keyword.get(opts, :session) do
        %Session{offsets: offsets, store_opts: store_opts} -> {offsets, store_opts}
        _ -> {%{}, []}
      end

    store_opts = Keyword.merge(store_opts, Keyword.take(opts, [:pipeline]))
    chain_back(node, id, {store_opts, offsets}, [], 0)
  end

  @max_hops 1_000

  defp chain_back(_node, _id, _ctx, acc, hops) when hops > @max_hops, do: acc

  defp chain_back(node, id, {opts, offsets} = ctx, acc, hops) do
    case rpc(node, ElixirScope.EventCorrelator, :get_correlation_chain, [id, opts]) do
      {:ok, []} ->
        acc

      {:ok, [root | _] = chain} ->
        {off, _} =
          Map.get_lazy(offsets, node, fn -> Map.get(clock_offsets([node]), node, {0, 0}) end)

        acc = Enum.map(chain, &{node, update_in(&1.event.timestamp, fn t -> t - off end)}) ++ acc

        case for({:receives, {n, send}} <- root.links, do: {n, send}) do
          [{n, send} | _] -> chain_back(n, send, ctx, acc, hops + 1)
          [] -> acc
        end

      {:error, :noconnection} ->
        {:error, {:nodedown, node}}

      {:error, reason} ->
        {:error, {node, reason}}
    end
  end

  @doc """
  The session's counters on each node now (`{:error, reason}` where
  unreachable, or where no answer came within `timeout` ms, default 15000).
  """
  @spec trace_info(Session.t(), timeout()) :: %{node() => map() | {:error, term()}}
  def trace_info(%Session{} = s, timeout \\ @rpc_timeout) do
    per_node(s.nodes, fn node -> rpc(node, Local, :trace_info, [s.id], timeout) end)
  end

  defp per_node(nodes, call) do
    nodes
    |> Task.async_stream(fn node -> {node, call.(node)} end,
      timeout: :infinity,
      ordered: false
    )
    |> Map.new(fn
      {:ok, {node, {:ok, {:ok, result}}}} -> {node, result}
      {:ok, {node, {:ok, {:error, _} = error}}} -> {node, error}
      {:ok, {node, {:error, :noconnection}}} -> {node, {:error, :nodedown}}
      {:ok, {node, {:error, _} = error}} -> {node, error}
    end)
  end

  @doc """
  Each node's monotonic clock minus this node's, in ns, with the bound of
  the estimate's error: `%{node => {offset_ns, error_ns}}` (see the module
  doc). Unreachable nodes are left out.
  """
  @spec clock_offsets([node()]) :: %{node() => {integer(), non_neg_integer()}}
  def clock_offsets(nodes) do
    for node <- nodes, estimate = offset(node), into: %{}, do: {node, estimate}
  end

  defp offset(node) when node == node(), do: {0, 0}

  defp offset(node) do
    samples =
      for _ <- 1..5 do
        t0 = System.monotonic_time(:nanosecond)
        remote = :erpc.call(node, Local, :now, [], @rpc_timeout)
        t1 = System.monotonic_time(:nanosecond)
        {t1 - t0, remote - div(t0 + t1, 2)}
      end

    {rtt, offset} = Enum.min(samples)
    {offset, div(rtt + 1, 2)}
  catch
    _, _ -> nil
  end

  @doc """
  Runs `ElixirScope.Query.select/2` with `filter` on every node and merges
  the results by time (each node's events stay in their id order): `{:ok, [{node, %CorrelatedEvent{}}]}`, or
  `{:partial, results, missing_nodes}` when some nodes did not answer.

  Timestamps (the events' and the filter's `from:`/`to:`) are on this
  node's monotonic clock, converted with each node's offset. Options:
  `session:` (its nodes, the offsets estimated when it started, and
  `from:` its start unless the filter says otherwise) or
  `nodes:` (default `:connected`; offsets estimated now), `timeout:` (ms
  per node, default 15000), and the options of `Query.select/2` (`pipeline:`
  names a pipeline on every node). A `limit:` applies to the merged list;
  a `pid:` filter asks only the pid's node (its events are stored there).
  """
  @spec query(keyword(), keyword()) ::
          node_result([{node(), ElixirScope.CorrelatedEvent.t()}]) | {:error, term()}
  def query(filter \\ [], opts \\ []) do
    with {:ok, nodes, offsets, since, opts} <- targets(opts, filter) do
      {timeout, opts} = Keyword.pop(opts, :timeout, @rpc_timeout)
      {limit, filter} = Keyword.pop(filter, :limit, :infinity)
      filter = if since, do: Keyword.put_new(filter, :from, since), else: filter

      answers =
        gather(nodes, timeout, opts, fn node ->
          {off, _} = Map.fetch!(offsets, node)
          {shift_window(filter, off) ++ limit_opt(limit), off}
        end)

      results =
        answers
        |> Enum.flat_map(fn
          {_, {:ok, events}} when events != [] -> [events]
          _ -> []
        end)
        |> Enum.reduce([], fn
          events, [] ->
            events

          events, acc ->
            :lists.merge(
              &(elem(&1, 1).event.timestamp <= elem(&2, 1).event.timestamp),
              acc,
              events
            )
        end)
        |> take(limit)

      answer(results, answers)
    end
  end

  # Runs a query on every node at once: this node's part in the caller,
  # while the others stream theirs as compact tuples in chunks, each made
  # structs (on this node's clock) as it arrives while the next is read
  # there. `[{node, {:ok, [{node, event}]} | {:error, reason}}]`.
  defp gather(nodes, timeout, opts, filter_of) do
    deadline = System.monotonic_time(:millisecond) + timeout

    streams =
      for node <- nodes, node != node() do
        {filter, off} = filter_of.(node)
        # Sent to an alias: once it is gone, late chunks are dropped.
        ref = :erlang.alias()
        args = [ref, ref, filter, opts]
        {pid, monitor} = :erlang.spawn_monitor(node, Local, :stream_select, args)
        {node, off, {pid, ref, monitor}}
      end

    here =
      try do
        if node() in nodes do
          {filter, _} = filter_of.(node())
          [{node(), {:ok, for(e <- ElixirScope.Query.select(filter, opts), do: {node(), e})}}]
        else
          []
        end
      rescue
        # A bad filter raises here as it does on the others: stop them.
        e ->
          for {_, _, {pid, _, _} = stream} <- streams,
              do: Process.exit(pid, :kill) && end_stream(stream)

          reraise e, __STACKTRACE__
      end

    remote =
      for {node, off, stream} <- streams, do: {node, collect(stream, node, off, deadline, [])}

    here ++ remote
  end

  defp collect({pid, ref, monitor} = stream, node, off, deadline, chunks) do
    receive do
      {^ref, {:chunk, tuples}} ->
        chunk = ElixirScope.Native.expand_compact(tuples, node, off)
        collect(stream, node, off, deadline, [chunk | chunks])

      {^ref, :done} ->
        end_stream(stream)
        {:ok, chunks |> Enum.reverse() |> Enum.concat()}

      {:DOWN, ^monitor, :process, _, reason} ->
        end_stream(stream)
        {:error, reason}
    after
      max(deadline - System.monotonic_time(:millisecond), 0) ->
        Process.exit(pid, :kill)
        end_stream(stream)
        {:error, :timeout}
    end
  end

  defp end_stream({_pid, ref, monitor}) do
    :erlang.unalias(ref)
    Process.demonitor(monitor, [:flush])
  end

  # A process's events are stored on its node only: a `pid:` filter asks that node.
  defp holding(nodes, filter) do
    case Keyword.get(filter, :pid) do
      pid when is_pid(pid) -> Enum.filter(nodes, &(&1 == node(pid)))
      _ -> nodes
    end
  end

  defp limit_opt(:infinity), do: []
  defp limit_opt(n), do: [limit: n]

  defp take(results, :infinity), do: results
  defp take(results, n), do: Enum.take(results, n)

  defp shift_window(filter, off) do
    Enum.map(filter, fn
      {k, t} when k in [:from, :to] and is_integer(t) -> {k, t + off}
      other -> other
    end)
  end

  @doc """
  `ElixirScope.Export.chrome_trace/3` of a cluster query (`filter` and
  options as `query/2`): a trace process per node, a track per process, and
  messages between nodes as flow arrows from the send's track to the
  receive's. Returns `{:ok, :ok | binary}` (written to the path `to`, or
  the JSON when `to` is `:binary`), or `{:partial, written, missing_nodes}`.
  """
  @spec chrome_trace(keyword(), Path.t() | :binary, keyword()) ::
          node_result(:ok | binary()) | {:error, term()}
  def chrome_trace(filter \\ [], to, opts \\ []) do
    case query(filter, opts) do
      {:ok, results} ->
        {:ok, ElixirScope.Export.chrome_of(results, to)}

      {:partial, results, missing} ->
        {:partial, ElixirScope.Export.chrome_of(results, to), missing}

      error ->
        error
    end
  end

  @doc """
  `ElixirScope.Query.call_stat/2` on every node, merged: counts and times
  of the same key add up (`:pid` keys stay per process). `{:ok, stats}` or
  `{:partial, stats, missing_nodes}`. Options as `query/2` (with
  `session:`, the calls since it started), plus the filter keys of
  `Query.call_stat/2`.
  """
  @spec call_stat(:mfa | :module | :pid | (ElixirScope.CorrelatedEvent.t() -> term()), keyword()) ::
          node_result(%{term() => ElixirScope.Query.stat()}) | {:error, term()}
  def call_stat(key \\ :mfa, opts \\ []) do
    with {:ok, nodes, offsets, since, opts} <- targets(opts, opts) do
      {timeout, opts} = Keyword.pop(opts, :timeout, @rpc_timeout)
      opts = if since, do: Keyword.put_new(opts, :from, since), else: opts

      answers =
        fan_out(nodes, timeout, fn node ->
          {off, _} = Map.fetch!(offsets, node)
          {Local, :call_stat, [key, shift_window(opts, off)]}
        end)

      stats =
        for {_, {:ok, stat}} <- answers, reduce: %{} do
          acc ->
            Map.merge(acc, stat, fn _, a, b ->
              %{
                count: a.count + b.count,
                acc_time: a.acc_time + b.acc_time,
                own_time: a.own_time + b.own_time
              }
            end)
        end

      answer(stats, answers)
    end
  end

  # The nodes and offsets a query addresses, and the options left.
  # (Only the nodes `filter` can find events on: see `holding/2`.)
  defp targets(opts, filter) do
    {session, opts} = Keyword.pop(opts, :session)
    {nodes, opts} = Keyword.pop(opts, :nodes)

    case {session, nodes} do
      {%Session{nodes: nodes, offsets: offsets} = s, nil} ->
        {:ok, holding(nodes, filter), offsets, s.started_at, opts}

      {nil, nodes} ->
        with {:ok, nodes} <- resolve_nodes(nodes || :connected) do
          nodes = holding(nodes, filter)
          offsets = clock_offsets(nodes)
          {:ok, nodes, Map.merge(Map.new(nodes, &{&1, {0, 0}}), offsets), nil, opts}
        end

      {%Session{}, _} ->
        raise ArgumentError, "give session: or nodes:, not both"

      {other, _} ->
        raise ArgumentError,
              "session: expected an %ElixirScope.Cluster.Session{}, got: #{inspect(other)}"
    end
  end

  # Runs `mfa_of.(node)` on every node at once (this node's part in the
  # caller, while the others run): `[{node, {:ok, result} | {:error, reason}}]`.
  defp fan_out(nodes, timeout, mfa_of) do
    requests =
      for node <- nodes, node != node() do
        {m, f, a} = mfa_of.(node)
        {node, :erpc.send_request(node, m, f, a)}
      end

    here =
      if node() in nodes do
        {m, f, a} = mfa_of.(node())
        [{node(), {:ok, apply(m, f, a)}}]
      else
        []
      end

    remote =
      for {node, request} <- requests do
        result =
          try do
            {:ok, :erpc.receive_response(request, timeout)}
          catch
            :error, {:erpc, reason} -> {:error, reason}
            :error, {:exception, reason, _stack} -> {:error, reason}
            kind, reason -> {:error, {kind, reason}}
          end

        {node, result}
      end

    here ++ remote
  end

  defp answer(results, answers) do
    case for({node, {:error, _}} <- answers, uniq: true, do: node) do
      [] -> {:ok, results}
      missing -> {:partial, results, missing}
    end
  end

  defp resolve_nodes(:connected), do: {:ok, [node() | Node.list()]}

  defp resolve_nodes([_ | _] = nodes) do
    if Enum.all?(nodes, &is_atom/1),
      do: {:ok, Enum.uniq(nodes)},
      else: {:error, {:invalid_option, :nodes, nodes}}
  end

  defp resolve_nodes(other), do: {:error, {:invalid_option, :nodes, other}}

  # %{node => the pids option for that node}.
  defp split_pids(nodes, pids) when is_list(pids) and pids != [] do
    case Enum.find(pids, &(not is_pid(&1) or node(&1) not in nodes)) do
      nil ->
        {:ok, pids |> Enum.group_by(&node/1)}

      pid when is_pid(pid) ->
        {:error, {:pid_not_on_nodes, pid}}

      other ->
        {:error, {:invalid_option, :pids, other}}
    end
  end

  defp split_pids(nodes, pid) when is_pid(pid), do: split_pids(nodes, [pid])
  defp split_pids(_nodes, nil), do: {:error, {:missing_option, :pids}}
  defp split_pids(nodes, pids), do: {:ok, Map.new(nodes, &{&1, pids})}

  defp all_running(nodes) do
    Enum.find_value(nodes, :ok, fn node ->
      case rpc(node, Local, :ping, []) do
        {:ok, :ok} -> nil
        {:ok, {:error, :not_running}} -> {:error, {:not_running, node}}
        {:error, {:exception, :undef, _}} -> {:error, {:not_running, node}}
        {:error, :noconnection} -> {:error, {:nodedown, node}}
        {:error, reason} -> {:error, {node, reason}}
      end
    end)
  end

  # `{:ok, result}` or `{:error, reason}`, never an exception.
  defp rpc(node, m, f, a, timeout \\ @rpc_timeout) do
    {:ok, :erpc.call(node, m, f, a, timeout)}
  catch
    :error, {:erpc, reason} -> {:error, reason}
    :error, {:exception, reason, stack} -> {:error, {:exception, reason, stack}}
    kind, reason -> {:error, {kind, reason}}
  end
end
