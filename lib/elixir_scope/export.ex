defmodule ElixirScope.Export do
  @moduledoc """
  Pictures and files of a store's events, in the formats tools read.

    * `chrome_trace/3` — Chrome Trace Event Format (JSON) for Perfetto,
      `chrome://tracing` and speedscope: a track per process, calls as
      begin/end pairs, messages as flow arrows between tracks, state
      changes, spawns and exits as instant events.
    * `folded_stacks/2` — flame-graph folded stacks for inferno,
      flamegraph.pl or speedscope.
    * `mermaid_sequence/2` — a Mermaid `sequenceDiagram` of the message flow.
    * `jsonl/3` — one JSON object per event, streamed to a file.
    * `call_tree/2` — a call's tree across processes as text (what
      `ElixirScope.print_call_tree/2` prints).

  Each takes the filter keys of `ElixirScope.Query.select/2` (or a call id)
  and `pipeline:`.
  """

  alias ElixirScope.{CorrelatedEvent, Query}
  alias ElixirScope.Export.JSON

  @calls [:function_call, :function_return, :function_exception]

  # --- Chrome trace --------------------------------------------------------

  @doc """
  The events `filter` selects as a Chrome trace: written to the path `to`
  (returns `:ok`), or returned when `to` is `:binary`. Every call gets its
  end: one whose return was not traced (still running, or closed by an
  outer return) ends with the event that closed it or with the trace, and
  says so in its args.
  """
  @spec chrome_trace(Query.filter(), Path.t() | :binary, keyword()) :: :ok | binary()
  def chrome_trace(filter \\ [], to, opts \\ []) do
    filter |> Query.select(opts) |> Enum.map(&{node(), &1}) |> chrome_of(to)
  end

  @doc false
  # The Chrome trace of `[{node, %CorrelatedEvent{}}]` (one node, or a
  # cluster query): a trace process per node, a track per process. Flow ids
  # are `node index * 2^40 + send id`, so sends of different nodes never
  # share one; a receive linked to a send on another node ends that flow.
  def chrome_of(entries, to) do
    nodes = entries |> Enum.map(&elem(&1, 0)) |> Enum.uniq() |> Enum.with_index() |> Map.new()

    tids =
      entries
      |> Enum.map(fn {node, e} -> {node, e.event.pid} end)
      |> Enum.uniq()
      |> Enum.with_index(1)
      |> Map.new()

    last = entries |> Enum.map(fn {_, e} -> e.event.timestamp end) |> Enum.max(fn -> 0 end)

    sends =
      for {node, e} <- entries,
          e.event.type == :message_send,
          into: MapSet.new(),
          do: {node, e.event.id}

    ctx = %{nodes: nodes, tids: tids, sends: sends}
    names = node_meta(nodes) ++ for {key, tid} <- tids, do: meta(ctx, key, tid)

    {trace, stacks} =
      Enum.flat_map_reduce(entries, %{}, fn {node, e}, stacks ->
        chrome_event(node, e, ctx, stacks)
      end)

    unfinished =
      for {{node, _} = key, stack} <- stacks, id <- stack do
        at(ctx, node, tids[key], last, [
          {"ph", ~s("E")},
          {"args", JSON.object([{"unfinished", "true"}, {"call", int(id)}])}
        ])
      end

    body =
      IO.iodata_to_binary([
        ~s({"displayTimeUnit":"ns","traceEvents":[),
        Enum.intersperse(names ++ trace ++ unfinished, ","),
        "]}"
      ])

    case to do
      :binary -> body
      path -> File.write!(path, body)
    end
  end

  # Several nodes: each trace process is named after its node.
  defp node_meta(nodes) when map_size(nodes) < 2, do: []

  defp node_meta(nodes) do
    for {node, i} <- nodes do
      JSON.object([
        {"ph", ~s("M")},
        {"pid", int(i + 1)},
        {"name", ~s("process_name")},
        {"args", JSON.object([{"name", JSON.string(Atom.to_string(node))}])}
      ])
    end
  end

  # Trace events are built as JSON text directly: a map per event and the
  # general encoder cost several times more for 100k events.
  defp meta(ctx, {node, pid}, tid) do
    JSON.object([
      {"ph", ~s("M")},
      {"pid", int(ctx.nodes[node] + 1)},
      {"tid", int(tid)},
      {"name", ~s("thread_name")},
      {"args", JSON.object([{"name", JSON.string(process_name(pid))}])}
    ])
  end

  defp at(ctx, node, tid, ns, fields) do
    JSON.object([
      {"pid", int(ctx.nodes[node] + 1)},
      {"tid", int(tid)},
      {"ts", ts(ns)} | fields
    ])
  end

  defp int(n), do: Integer.to_string(n)
  defp ts(ns), do: :erlang.float_to_binary(ns / 1000, [:short])

  defp flow_id(ctx, node, id), do: int(ctx.nodes[node] * 0x10000000000 + id)

  # The send a receive ends the flow of, if it is in the trace.
  defp flow_source(ctx, node, e) do
    if MapSet.member?(ctx.sends, {node, e.correlation_id}) do
      {node, e.correlation_id}
    else
      Enum.find_value(e.links, fn
        {:receives, {n, id}} -> MapSet.member?(ctx.sends, {n, id}) && {n, id}
        _ -> nil
      end)
    end
  end

  defp chrome_event(node, %CorrelatedEvent{event: ev} = e, ctx, stacks) do
    key = {node, ev.pid}
    tid = ctx.tids[key]
    stack = Map.get(stacks, key, [])
    at = &at(ctx, node, tid, ev.timestamp, &1)

    case ev.type do
      :function_call ->
        name = JSON.string("#{inspect(ev.module)}.#{ev.function}/#{ev.arity}")
        args = JSON.object([{"id", int(ev.id)}, {"args", JSON.encode(ev.data)}])

        {[at.([{"ph", ~s("B")}, {"name", name}, {"args", args}])],
         Map.put(stacks, key, [ev.id | stack])}

      kind when kind in [:function_return, :function_exception] ->
        # Close the call it completes, and any left open inside it.
        case Enum.split_while(stack, &(&1 != e.correlation_id)) do
          {inner, [_call | rest]} ->
            ends =
              for id <- inner do
                at.([
                  {"ph", ~s("E")},
                  {"args", JSON.object([{"unfinished", "true"}, {"call", int(id)}])}
                ])
              end

            result =
              JSON.object([{"call", int(e.correlation_id)}, {"result", JSON.encode(ev.data)}])

            {ends ++ [at.([{"ph", ~s("E")}, {"args", result}])], Map.put(stacks, key, rest)}

          {_, []} ->
            {[], stacks}
        end

      :message_send ->
        instant =
          at.([{"ph", ~s("i")}, {"s", ~s("t")}, {"name", JSON.string("send " <> short(ev.data))}])

        flow =
          at.([
            {"ph", ~s("s")},
            {"id", flow_id(ctx, node, ev.id)},
            {"name", ~s("message")},
            {"cat", ~s("message")}
          ])

        {[instant, flow], stacks}

      :message_receive ->
        instant =
          at.([
            {"ph", ~s("i")},
            {"s", ~s("t")},
            {"name", JSON.string("receive " <> short(ev.data))}
          ])

        case flow_source(ctx, node, e) do
          {send_node, send_id} ->
            flow =
              at.([
                {"ph", ~s("f")},
                {"bp", ~s("e")},
                {"id", flow_id(ctx, send_node, send_id)},
                {"name", ~s("message")},
                {"cat", ~s("message")}
              ])

            {[instant, flow], stacks}

          nil ->
            {[instant], stacks}
        end

      other ->
        {[
           at.([
             {"ph", ~s("i")},
             {"s", ~s("t")},
             {"name", JSON.string("#{other} #{short(ev.data)}")}
           ])
         ], stacks}
    end
  end

  # --- folded stacks -------------------------------------------------------

  @doc """
  Folded stacks (`process;m:f/a;m:f/a weight`, one line per distinct
  stack) of the completed calls `filter` selects: `weight: :own_time`
  (µs, the default; the lines add up to the calls' total own time) or
  `:count` (each call adds 1 to its stack).
  """
  @spec folded_stacks(Query.filter(), keyword()) :: String.t()
  def folded_stacks(filter \\ [], opts \\ []) do
    {weight, opts} = Keyword.pop(opts, :weight, :own_time)

    unless weight in [:own_time, :count],
      do: raise(ArgumentError, "weight must be :own_time or :count, got: #{inspect(weight)}")

    {_, stacks} =
      filter
      |> Keyword.put(:type, @calls)
      |> Query.stream(opts)
      |> Enum.reduce({%{}, %{}}, &fold(&1, &2, weight))

    stacks
    |> Enum.sort()
    |> Enum.map_join(fn {stack, w} ->
      "#{stack} #{if weight == :count, do: w, else: div(w, 1000)}\n"
    end)
  end

  defp fold(%CorrelatedEvent{event: %{type: :function_call} = ev}, {open, acc}, _weight) do
    stack = Map.get(open, ev.pid, [])

    parent =
      case stack do
        [top | _] -> top.path
        [] -> process_name(ev.pid)
      end

    frame = %{
      id: ev.id,
      path: "#{parent};#{inspect(ev.module)}:#{ev.function}/#{ev.arity}",
      at: ev.timestamp,
      children: 0
    }

    {Map.put(open, ev.pid, [frame | stack]), acc}
  end

  defp fold(%CorrelatedEvent{event: ev, correlation_id: call}, {open, acc}, weight) do
    case Enum.split_while(Map.get(open, ev.pid, []), &(&1.id != call)) do
      {_inner, [frame | rest]} ->
        took = ev.timestamp - frame.at
        w = if weight == :count, do: 1, else: took - frame.children

        rest =
          case rest do
            [p | more] -> [%{p | children: p.children + took} | more]
            [] -> []
          end

        {Map.put(open, ev.pid, rest), Map.update(acc, frame.path, w, &(&1 + w))}

      {_, []} ->
        {open, acc}
    end
  end

  # --- Mermaid -------------------------------------------------------------

  @doc """
  A Mermaid `sequenceDiagram` of the messages `filter` selects (sends, in
  order): a `GenServer.call` as `->>` "call", its reply as `-->>`
  "reply", a cast as `-)` "cast", any other message as `->>`.
  """
  @spec mermaid_sequence(Query.filter(), keyword()) :: String.t()
  def mermaid_sequence(filter \\ [], opts \\ []) do
    sends = filter |> Keyword.put(:type, :message_send) |> Query.select(opts)
    receivers = for s <- sends, {:ok, r} <- [receiver(s, opts)], into: %{}, do: {s.event.id, r}

    parties =
      sends
      |> Enum.flat_map(&[&1.event.pid, Map.get(receivers, &1.event.id, &1.event.peer)])
      |> Enum.uniq()
      |> Enum.with_index(1)
      |> Map.new()

    lines =
      for s <- sends do
        to = Map.get(receivers, s.event.id, s.event.peer)
        {arrow, label} = arrow(s.event.data)
        "  P#{parties[s.event.pid]}#{arrow}P#{parties[to]}: #{mermaid_text(label)}"
      end

    participants =
      for {who, i} <- Enum.sort_by(parties, &elem(&1, 1)),
          do: "  participant P#{i} as #{mermaid_text(process_name(who))}"

    Enum.join(["sequenceDiagram" | participants ++ lines], "\n") <> "\n"
  end

  defp receiver(send, opts) do
    case ElixirScope.Storage.DataAccess.query_by_correlation(send.event.id, opts) do
      [_send, r | _] -> {:ok, r.event.pid}
      _ -> :error
    end
  end

  defp arrow({:"$gen_call", _from, request}), do: {"->>", "call " <> short(request)}
  defp arrow({:"$gen_cast", request}), do: {"-)", "cast " <> short(request)}

  defp arrow({[:alias | ref], reply}) when is_reference(ref),
    do: {"-->>", "reply " <> short(reply)}

  defp arrow(other), do: {"->>", short(other)}

  # Mermaid message text: no line breaks, no `;` or `#` (its separators).
  defp mermaid_text(s), do: s |> String.replace(["\n", ";", "#"], " ")

  # --- JSON lines ----------------------------------------------------------

  @doc """
  Writes the events `filter` selects to `path`, one JSON object a line,
  streamed (terms that JSON cannot hold are written as their `inspect`).
  Returns `{:ok, count}`.
  """
  @spec jsonl(Query.filter(), Path.t(), keyword()) :: {:ok, non_neg_integer()}
  def jsonl(filter, path, opts \\ []) do
    File.open!(path, [:write, :utf8], fn file ->
      filter
      |> Query.stream(opts)
      |> Enum.reduce(0, fn e, n ->
        IO.write(file, [JSON.encode(json_event(e)), "\n"])
        n + 1
      end)
    end)
    |> then(&{:ok, &1})
  end

  defp json_event(%CorrelatedEvent{event: ev} = e) do
    %{
      id: ev.id,
      type: ev.type,
      pid: inspect(ev.pid),
      timestamp: ev.timestamp,
      wall_time: ev.wall_time,
      module: ev.module && inspect(ev.module),
      function: ev.function,
      arity: ev.arity,
      data: ev.data,
      peer: if(is_nil(ev.peer), do: nil, else: inspect(ev.peer)),
      correlation_id: e.correlation_id,
      parent_id: e.parent_id,
      root_id: e.root_id,
      links: for({kind, target} <- e.links, do: [kind | link_target(target)]),
      correlation_confidence: e.correlation_confidence
    }
  end

  # A link's target in JSON: an id, or a node and an id.
  defp link_target({node, id}), do: [node, id]
  defp link_target(id), do: [id]

  # --- call tree -----------------------------------------------------------

  @doc """
  The call `id`'s tree as text: its nested calls with durations and
  results, the messages it sent and, across processes, the calls each
  message caused in its receiver; state changes in between. Processes
  are shown by registered name or pid, or by the label `names:` (a map of
  pid to string) gives them.
  """
  @spec call_tree(pos_integer(), keyword()) :: String.t()
  def call_tree(id, opts \\ []) do
    {names, opts} = Keyword.pop(opts, :names, %{})
    opts = Keyword.put(opts, :names, names)

    case Query.lookup(id, query_opts(opts)) do
      {:ok, %CorrelatedEvent{event: %{type: :function_call}} = call} ->
        call |> tree_lines(0, opts) |> Enum.join("\n") |> Kernel.<>("\n")

      {:ok, _} ->
        raise ArgumentError, "event #{id} is not a call"

      {:error, :not_found} ->
        raise ArgumentError, "no event #{id} in the store"
    end
  end

  defp query_opts(opts), do: Keyword.delete(opts, :names)

  defp tree_lines(call, depth, opts) do
    ev = call.event
    only_this = [after: ev.id - 1, before: ev.id + 1, type: :function_call]
    [range | _] = Query.ranges(only_this, query_opts(opts)) ++ [[call]]

    inside = Enum.filter(range, &(&1.parent_id == ev.id and &1.event.id != ev.id))

    ending =
      Enum.find(
        range,
        &(&1.event.type in [:function_return, :function_exception] and &1.correlation_id == ev.id)
      )

    args = ev.data |> List.wrap() |> Enum.map_join(", ", &short/1)

    outcome =
      case ending do
        %{event: %{type: :function_return} = r} ->
          "#{fmt_us(r.timestamp - ev.timestamp)} → #{short(r.data)}"

        %{event: %{type: :function_exception} = x} ->
          "#{fmt_us(x.timestamp - ev.timestamp)} ✗ raised #{short(x.data)}"

        nil ->
          "(no return traced)"
      end

    head = line(ev.pid, depth, "#{inspect(ev.module)}.#{ev.function}(#{args})  #{outcome}", opts)

    [head | Enum.flat_map(inside, &child_lines(&1, depth + 1, opts))]
  end

  defp child_lines(%CorrelatedEvent{event: ev} = e, depth, opts) do
    case ev.type do
      :function_call ->
        tree_lines(e, depth, opts)

      :state_change ->
        [line(ev.pid, depth, "state #{short(ev.data[:old])} ⇒ #{short(ev.data[:new])}", opts)]

      :message_send ->
        to = name(ev.peer, opts)
        sent = line(ev.pid, depth, "send → #{to}  #{elem(arrow(ev.data), 1)}", opts)
        q = query_opts(opts)

        caused =
          for r <- ElixirScope.Storage.DataAccess.query_by_correlation(ev.id, q),
              r.event.type == :message_receive,
              handler <- Query.effects(r.event.id, q),
              handler.event.type == :function_call,
              line <- tree_lines(handler, depth + 1, opts),
              do: line

        [sent | caused]

      :message_receive ->
        [line(ev.pid, depth, "recv ← #{name(ev.peer, opts)}  #{elem(arrow(ev.data), 1)}", opts)]

      _ ->
        []
    end
  end

  defp line(pid, depth, text, opts),
    do: String.pad_trailing(name(pid, opts), 12) <> String.duplicate("  ", depth) <> text

  defp name(pid, opts), do: Map.get(opts[:names], pid) || process_name(pid)

  defp fmt_us(ns), do: "#{Float.round(ns / 1000, 1)} µs"

  # --- names ---------------------------------------------------------------

  @doc false
  # A process by its registered name when it has one now, else its pid.
  def process_name(pid) when is_pid(pid) do
    # A process without a name answers `[]`; a dead one, `nil`.
    case node(pid) == node() && Process.info(pid, :registered_name) do
      {:registered_name, name} when is_atom(name) -> inspect(name)
      _ -> inspect(pid)
    end
  end

  def process_name(name) when is_atom(name) and not is_nil(name), do: inspect(name)
  def process_name({name, pid}) when is_atom(name) and is_pid(pid), do: inspect(name)
  def process_name(other), do: inspect(other)

  defp short(term) do
    s = inspect(term, limit: 6, printable_limit: 40, width: :infinity)
    if String.length(s) > 60, do: String.slice(s, 0, 59) <> "…", else: s
  end
end
