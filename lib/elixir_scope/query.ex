defmodule ElixirScope.Query do
  @moduledoc """
  Questions over a store, at erlang_doctor's level (`tr`): filtered
  selections, browsing, causes and effects, call statistics.

      alias ElixirScope.Query
      Query.select(mfa: {MyApp.Repo, :insert, :_}, from: t0)
      Query.select(type: :message_receive, data: {:order, 42})   # a term anywhere in the data
      Query.stream(pid: pid) |> Stream.filter(&slow?/1) |> Enum.take(5)
      Query.next(event, type: :state_change)
      Query.sorted_call_stat(:mfa, sort_by: :own_time, limit: 10)

  ## Filters

  Every function that reads events takes these keys (in `filter` for
  `select/2`, `stream/2`, `next/3`, `prev/3`; in `opts` for the others):

    * `pid:` a local pid;
    * `type:` an event type or a list of them (`:function_call`, ...);
    * `mfa: {module, function, arity}`, each part may be `:_`;
    * `module:` a module;
    * `from:` / `to:` monotonic ns, inclusive;
    * `after:` / `before:` event ids, exclusive;
    * `data:` a term found anywhere inside the event's data (an argument
      list, a return value, a message), recursively, as
      `tr:contains_data/2` (a payload truncated at ingest is only searched
      in what was kept);
    * `match:` a predicate on `%CorrelatedEvent{}`, run in Elixir on the
      natively filtered events, chunk by chunk;
    * `limit:` at most this many events.

  Field filters run natively, on the store's records in place; events come
  back as `%ElixirScope.CorrelatedEvent{}`, in id order (`order: :desc`
  for the newest first).

  ## Options

  `pipeline:` (the store of that pipeline; default the application's) or
  `store:` (a trace loaded by `ElixirScope.load/2`) and, for streams,
  `chunk_size:` (events read per step, default 10_000).
  """

  alias ElixirScope.{CorrelatedEvent, Native}
  alias ElixirScope.Storage.DataAccess

  @kinds ElixirScope.Event.types()
  @filter_keys [:pid, :type, :mfa, :module, :from, :to, :after, :before, :data, :match, :limit]
  @option_keys [:pipeline, :store, :order, :chunk_size]

  @type filter :: keyword()
  @type stat :: %{count: non_neg_integer(), acc_time: integer(), own_time: integer()}

  @doc "The events `filter` matches (see the module doc), as a list."
  @spec select(filter(), keyword()) :: [CorrelatedEvent.t()]
  def select(filter \\ [], opts \\ []), do: filter |> stream(opts) |> Enum.to_list()

  @doc "The events `filter` matches, read from the store in chunks."
  @spec stream(filter(), keyword()) :: Enumerable.t()
  def stream(filter, opts \\ []), do: stream_with(filter, opts, &Native.cursor_next/2)

  @doc false
  # As `stream/2`, in chunks (lists, of up to `chunk_size:` events) of
  # `ElixirScope.Cluster.Local.compact/1`'s flat tuples, built natively
  # (for `ElixirScope.Cluster`); no `match:`.
  def compact_chunks(filter, opts) do
    if Keyword.has_key?(filter, :match),
      do: raise(ArgumentError, "compact_chunks takes no :match")

    stream_with(filter, opts, fn cursor, n ->
      case Native.cursor_next_compact(cursor, n) do
        [] -> []
        events -> [events]
      end
    end)
  end

  defp stream_with(filter, opts, next) do
    check_keys!(filter, @filter_keys, "filter")
    check_keys!(opts, @option_keys, "option")
    native = native_filter(filter)
    store = DataAccess.store(opts)
    order = order!(opts)
    chunk = chunk_size!(opts)
    {limit, match} = {limit!(filter), Keyword.get(filter, :match)}

    unless is_nil(match) or is_function(match, 1),
      do: raise(ArgumentError, "match: expected a 1-arity function, got: #{inspect(match)}")

    native_limit = if match || limit == :infinity, do: 0xFFFF_FFFF_FFFF_FFFF, else: limit

    events =
      DataAccess.cursor_stream(
        fn -> Native.store_query(store, native, native_limit, order) end,
        chunk,
        next
      )

    events = if match, do: Stream.filter(events, match), else: events
    if match && limit != :infinity, do: Stream.take(events, limit), else: events
  end

  @doc "One event by id: `{:ok, event}` or `{:error, :not_found}`."
  @spec lookup(pos_integer(), keyword()) :: {:ok, CorrelatedEvent.t()} | {:error, :not_found}
  def lookup(id, opts \\ []), do: DataAccess.get_event(id, opts)

  @doc "The first event after `event_or_id` (by id) that `filter` matches, or `nil`."
  @spec next(CorrelatedEvent.t() | pos_integer(), filter(), keyword()) ::
          CorrelatedEvent.t() | nil
  def next(event_or_id, filter \\ [], opts \\ []),
    do: step(event_or_id, filter, opts, :after, :asc)

  @doc "The last event before `event_or_id` (by id) that `filter` matches, or `nil`."
  @spec prev(CorrelatedEvent.t() | pos_integer(), filter(), keyword()) ::
          CorrelatedEvent.t() | nil
  def prev(event_or_id, filter \\ [], opts \\ []),
    do: step(event_or_id, filter, opts, :before, :desc)

  defp step(event_or_id, filter, opts, side, order) do
    filter = filter |> Keyword.put(side, id!(event_or_id)) |> Keyword.put(:limit, 1)
    filter |> stream(Keyword.put(opts, :order, order)) |> Enum.at(0)
  end

  @doc """
  The events `id` links to, one step back: what it completes (a call),
  receives (a send), was caused by, called from or spawned by. Links to
  events on other nodes (`{node, id}`) are left to
  `ElixirScope.Cluster.get_correlation_chain/2`.
  """
  @spec causes(pos_integer(), keyword()) :: [CorrelatedEvent.t()]
  def causes(id, opts \\ []) do
    case lookup(id!(id), opts) do
      {:ok, e} ->
        for {_kind, target} <- e.links,
            is_integer(target),
            {:ok, c} <- [lookup(target, opts)],
            do: c

      {:error, :not_found} ->
        []
    end
  end

  @doc """
  The events that link to `id`, one step forward: its return or receive
  (the event that joined it), the calls it made, the events it caused, the
  process it spawned's first call. Found among its process's later events
  (and, for a spawn, the child's).
  """
  @spec effects(pos_integer(), keyword()) :: [CorrelatedEvent.t()]
  def effects(id, opts \\ []) do
    id = id!(id)

    case lookup(id, opts) do
      {:ok, e} ->
        pids = [e.event.pid | if(e.event.type == :process_spawn, do: [e.event.peer], else: [])]

        pids
        |> Enum.filter(&is_pid/1)
        |> Enum.flat_map(&select([pid: &1, after: id], opts))
        |> Enum.filter(fn later -> Enum.any?(later.links, fn {_, t} -> t == id end) end)
        |> Enum.sort_by(& &1.event.id)

      {:error, :not_found} ->
        []
    end
  end

  @doc """
  For each call `filter` matches, the events of its process from the call
  to its return or exception, inclusive (`tr:ranges/2`). Options:
  `max_depth:` (levels below the call kept; default `:infinity`),
  `output:` `:all` (default), `:complete` (calls that returned) or
  `:incomplete` (calls still open, their range running to the newest
  event).
  """
  @spec ranges(filter(), keyword()) :: [[CorrelatedEvent.t()]]
  def ranges(filter \\ [], opts \\ []) do
    {max_depth, opts} = Keyword.pop(opts, :max_depth, :infinity)
    {output, opts} = Keyword.pop(opts, :output, :all)
    {native, limit, opts} = native_call(filter, opts)

    depth =
      case max_depth do
        :infinity ->
          0xFFFF_FFFF

        n when is_integer(n) and n >= 0 ->
          n

        other ->
          raise ArgumentError,
                "max_depth: expected a non-negative integer or :infinity, got: #{inspect(other)}"
      end

    keep =
      case output do
        :all ->
          fn _ -> true end

        :complete ->
          & &1

        :incomplete ->
          &(not &1)

        other ->
          raise ArgumentError,
                "output: expected :all, :complete or :incomplete, got: #{inspect(other)}"
      end

    for {complete, events} <- Native.store_ranges(DataAccess.store(opts), native, depth, limit),
        keep.(complete),
        do: events
  end

  @doc """
  For each event `filter` matches, the stack of calls it ran in
  (`tr:tracebacks/2`): root first, the event's own call last (a return's
  own call is the one it completes). Options:

    * `across: true` continues past a root call caused by a message into
      the process that sent it (receive -> send -> the sender's call -> ...),
      which no tool offers today;
    * `order:` `:top_down` (root first, the default) or `:bottom_up`;
    * `output:` `:shortest` (default: distinct tracebacks, dropping one
      that extends another), `:longest` (dropping one that another
      extends) or `:all` (one per matching event, in id order);
    * `format:` `:list` (default), `:root` (the distinct root calls), or
      `:tree` (the tracebacks merged into `%{call:, children:}` nodes);
    * `limit:` at most this many tracebacks.
  """
  @spec tracebacks(filter(), keyword()) ::
          [[CorrelatedEvent.t()]] | [map()] | [CorrelatedEvent.t()]
  def tracebacks(filter \\ [], opts \\ []) do
    {across, opts} = Keyword.pop(opts, :across, false)
    {order, opts} = Keyword.pop(opts, :order, :top_down)
    {output, opts} = Keyword.pop(opts, :output, :shortest)
    {format, opts} = Keyword.pop(opts, :format, :list)
    {limit, opts} = Keyword.pop(opts, :limit, :infinity)

    unless is_boolean(across),
      do: raise(ArgumentError, "across: expected a boolean, got: #{inspect(across)}")

    {native, _, opts} = native_call(Keyword.delete(filter, :limit), opts)

    tracebacks =
      DataAccess.store(opts)
      # Only :all can stop at `limit` natively: the others compare them all.
      |> Native.store_tracebacks(native, across, native_limit(output, limit))
      |> Enum.reject(&(&1 == []))
      |> keep_output(output)
      |> take(limit)

    case format do
      :list ->
        if direction!(order) == :bottom_up,
          do: Enum.map(tracebacks, &Enum.reverse/1),
          else: tracebacks

      :root ->
        tracebacks |> Enum.map(&hd/1) |> Enum.uniq()

      :tree ->
        tree(tracebacks)

      other ->
        raise ArgumentError, "format: expected :list, :root or :tree, got: #{inspect(other)}"
    end
  end

  defp direction!(o) when o in [:top_down, :bottom_up], do: o

  defp direction!(o),
    do: raise(ArgumentError, "order: expected :top_down or :bottom_up, got: #{inspect(o)}")

  defp native_limit(:all, n) when is_integer(n) and n >= 0, do: n
  defp native_limit(_output, _limit), do: 0xFFFF_FFFF_FFFF_FFFF

  defp keep_output(tracebacks, :all), do: tracebacks

  defp keep_output(tracebacks, :shortest) do
    distinct = Enum.uniq(tracebacks)
    Enum.reject(distinct, fn t -> Enum.any?(distinct, &(&1 != t and prefix?(&1, t))) end)
  end

  defp keep_output(tracebacks, :longest) do
    distinct = Enum.uniq(tracebacks)
    Enum.reject(distinct, fn t -> Enum.any?(distinct, &(&1 != t and prefix?(t, &1))) end)
  end

  defp keep_output(_, other),
    do:
      raise(ArgumentError, "output: expected :shortest, :longest or :all, got: #{inspect(other)}")

  defp prefix?(short, long), do: length(short) < length(long) and List.starts_with?(long, short)

  defp take(list, :infinity), do: list
  defp take(list, n) when is_integer(n) and n >= 0, do: Enum.take(list, n)

  defp take(_, other),
    do: raise(ArgumentError, "limit: expected a non-negative integer, got: #{inspect(other)}")

  # Tracebacks (root first) merged into a forest of %{call:, children:}.
  defp tree(tracebacks) do
    tracebacks
    |> Enum.group_by(&hd/1, &tl/1)
    |> Enum.sort_by(fn {call, _} -> call.event.id end)
    |> Enum.map(fn {call, rests} ->
      %{call: call, children: tree(Enum.reject(rests, &(&1 == [])))}
    end)
  end

  # A filter and the options of a call-structure query: native filter, limit, options left.
  defp native_call(filter, opts) do
    check_keys!(filter, @filter_keys -- [:match], "filter")
    check_keys!(opts, @option_keys, "option")
    limit = with :infinity <- limit!(filter), do: 0xFFFF_FFFF_FFFF_FFFF
    {native_filter(filter), limit, opts}
  end

  @doc """
  Complete call trees that repeat (`tr:top_call_trees/1`): calls whose
  whole subtree (functions, arguments, results, nested calls) occurs at
  least `min_count:` times (default 2), of at most `max_size:` calls
  (default 10), whose accumulated time is at least `min_time:` ns
  (default 0), most time-consuming first. Each is `%{count:, acc_time:,
  tree:}`, `tree` being one occurrence as nested `%{call:, result:,
  children:}` (`call` the call event, `result` its return or exception).
  `output: :reduced` (the default) leaves out a tree found inside another
  reported one; `:complete` keeps all. The filter keys in `opts` narrow the
  events read; `limit:` caps the list.
  """
  @spec top_call_trees(keyword()) :: [%{count: pos_integer(), acc_time: integer(), tree: map()}]
  def top_call_trees(opts \\ []) do
    {min_count, opts} = Keyword.pop(opts, :min_count, 2)
    {min_time, opts} = Keyword.pop(opts, :min_time, 0)
    {max_size, opts} = Keyword.pop(opts, :max_size, 10)
    {output, opts} = Keyword.pop(opts, :output, :reduced)
    {limit, opts} = Keyword.pop(opts, :limit, :infinity)
    {filter, opts} = Keyword.split(opts, @filter_keys)

    for {name, v} <- [min_count: min_count, max_size: max_size],
        not (is_integer(v) and v > 0),
        do: raise(ArgumentError, "#{name}: expected a positive integer, got: #{inspect(v)}")

    unless is_integer(min_time),
      do: raise(ArgumentError, "min_time: expected ns, got: #{inspect(min_time)}")

    unless output in [:reduced, :complete],
      do: raise(ArgumentError, "output: expected :reduced or :complete, got: #{inspect(output)}")

    {_, groups} =
      filter
      |> Keyword.put(:type, [:function_call, :function_return, :function_exception])
      |> stream(opts)
      |> Enum.reduce({%{}, %{}}, &grow(&1, &2, max_size))

    repeated = for {key, g} <- groups, g.count >= min_count, g.acc_time >= min_time, do: {key, g}

    repeated
    |> reduce_trees(output)
    |> Enum.sort_by(fn {_, g} -> -g.acc_time end)
    |> take(limit)
    |> Enum.map(fn {_, g} -> g end)
  end

  # Builds each completed call's tree bottom-up on its process's stack;
  # trees of at most `max` calls are grouped by their structure.
  defp grow(%{event: %{type: :function_call} = ev} = call, {stacks, groups}, _max) do
    frame = %{call: call, children: [], keys: [], size: 1}
    {Map.update(stacks, ev.pid, [frame], &[frame | &1]), groups}
  end

  defp grow(%{event: ev, correlation_id: id} = result, {stacks, groups}, max) do
    case Enum.split_while(Map.get(stacks, ev.pid, []), &(&1.call.event.id != id)) do
      {_unfinished, [frame | rest]} ->
        c = frame.call.event

        outcome =
          if ev.type == :function_return, do: {:return, ev.data}, else: {:exception, ev.data}

        key = {c.module, c.function, c.arity, c.data, outcome, Enum.reverse(frame.keys)}
        node = %{call: frame.call, result: result, children: Enum.reverse(frame.children)}
        took = ev.timestamp - c.timestamp

        groups =
          if frame.size <= max do
            Map.update(groups, key, %{count: 1, acc_time: took, tree: node}, fn g ->
              %{g | count: g.count + 1, acc_time: g.acc_time + took}
            end)
          else
            groups
          end

        rest =
          case rest do
            [parent | more] ->
              [
                %{
                  parent
                  | children: [node | parent.children],
                    keys: [key | parent.keys],
                    size: parent.size + frame.size
                }
                | more
              ]

            [] ->
              []
          end

        {Map.put(stacks, ev.pid, rest), groups}

      {_, []} ->
        {stacks, groups}
    end
  end

  defp reduce_trees(trees, :complete), do: trees

  defp reduce_trees(trees, :reduced) do
    keys = Enum.map(trees, &elem(&1, 0))
    Enum.reject(trees, fn {k, _} -> Enum.any?(keys, &(&1 != k and inside?(k, &1))) end)
  end

  # True when the tree `k` occurs inside the tree `outer`.
  defp inside?(k, {_, _, _, _, _, children}),
    do: Enum.any?(children, &(&1 == k or inside?(k, &1)))

  @doc """
  The last known state of a GenServer process at `timestamp` (monotonic
  ns), from its `:state_change` events: `{:ok, state, event_id}` or
  `{:error, :unknown}`.
  """
  @spec state_at(pid(), integer(), keyword()) :: {:ok, term(), pos_integer()} | {:error, :unknown}
  def state_at(pid, timestamp, opts \\ []) do
    case select(
           [pid: pid, type: :state_change, to: timestamp, limit: 1],
           Keyword.put(opts, :order, :desc)
         ) do
      [%{event: %{data: %{new: state}, id: id}}] -> {:ok, state, id}
      _ -> {:error, :unknown}
    end
  end

  @doc """
  Calls a traced function again with its captured arguments:
  `{:ok, result}`, or `{:error, reason}` without calling anything when the
  arguments were truncated at capture (`:truncated_arguments`), the event
  is not a call (`:not_a_call`), the module is gone
  (`{:module_not_found, m}`) or the function is not exported
  (`{:undefined_function, {m, f, a}}`). It runs in the caller, with the
  caller's side effects.
  """
  @spec replay(CorrelatedEvent.t()) :: {:ok, term()} | {:error, term()}
  def replay(%CorrelatedEvent{event: %{type: :function_call, module: m, function: f, data: args}}) do
    cond do
      match?({:truncated, _, _}, args) or not is_list(args) ->
        {:error, :truncated_arguments}

      not Code.ensure_loaded?(m) ->
        {:error, {:module_not_found, m}}

      not function_exported?(m, f, length(args)) ->
        {:error, {:undefined_function, {m, f, length(args)}}}

      true ->
        {:ok, apply(m, f, args)}
    end
  end

  def replay(%CorrelatedEvent{}), do: {:error, :not_a_call}

  def replay(other),
    do:
      raise(
        ArgumentError,
        "expected a %CorrelatedEvent{} of a call, got: #{inspect(other, limit: 5)}"
      )

  @doc """
  Call statistics of the completed calls, grouped by `key`: `:mfa`
  (`{m, f, a}`), `:module`, `:pid`, or a function of the call event
  (`%CorrelatedEvent{}`). Each key maps to `%{count:, acc_time:,
  own_time:}` in ns, counted as erlang_doctor counts: every call counts;
  own time is a call's duration less its direct children's; the
  accumulated time of a key leaves out calls nested in an open call of the
  same key (recursion), so the own times of a call tree sum to its root's
  accumulated time. The filter keys in `opts` pick the calls counted (their
  children's time is still subtracted). The atoms run natively in one pass.
  """
  @spec call_stat(:mfa | :module | :pid | (CorrelatedEvent.t() -> term()), keyword()) ::
          %{term() => stat()}
  def call_stat(key \\ :mfa, opts \\ [])

  def call_stat(key, opts) when key in [:mfa, :module, :pid] do
    {filter, opts} = Keyword.split(opts, @filter_keys)
    if Keyword.has_key?(filter, :match), do: raise(ArgumentError, "call_stat takes no :match")
    check_keys!(opts, @option_keys, "option")

    for {k, count, acc, own} <-
          Native.store_call_stat(DataAccess.store(opts), native_filter(filter), key),
        into: %{},
        do: {k, %{count: count, acc_time: acc, own_time: own}}
  end

  def call_stat(key, opts) when is_function(key, 1) do
    {filter, opts} = Keyword.split(opts, @filter_keys)

    counted =
      case Keyword.drop(filter, [:limit]) do
        [] ->
          fn _ -> true end

        conditions ->
          calls = conditions |> Keyword.put(:type, :function_call) |> select(opts)
          ids = MapSet.new(calls, & &1.event.id)
          &MapSet.member?(ids, &1.event.id)
      end

    types = [type: [:function_call, :function_return, :function_exception]]

    types
    |> stream(Keyword.drop(opts, [:order]))
    |> Enum.reduce({%{}, %{}}, fn e, {stacks, stats} -> replay(e, key, counted, stacks, stats) end)
    |> elem(1)
  end

  def call_stat(key, _opts),
    do:
      raise(
        ArgumentError,
        "key must be :mfa, :module, :pid or a 1-arity function, got: #{inspect(key)}"
      )

  # The Elixir replay of `call_stat` for a key function: a stack a process,
  # with the counted calls each key has open (nesting checked in O(1)).
  defp replay(%{event: %{type: :function_call} = ev} = e, key, counted, stacks, stats) do
    {stack, open} = Map.get(stacks, ev.pid, {[], %{}})
    k = key.(e)
    on = counted.(e)
    nested = Map.get(open, k, 0) > 0
    open = if on, do: Map.update(open, k, 1, &(&1 + 1)), else: open
    frame = %{id: ev.id, key: k, at: ev.timestamp, children: 0, counted: on, nested: nested}
    {Map.put(stacks, ev.pid, {[frame | stack], open}), stats}
  end

  defp replay(%{event: ev, correlation_id: call_id}, _key, _counted, stacks, stats) do
    {stack, open} = Map.get(stacks, ev.pid, {[], %{}})

    case Enum.split_while(stack, &(&1.id != call_id)) do
      {unfinished, [frame | rest]} ->
        took = ev.timestamp - frame.at
        open = Enum.reduce([frame | unfinished], open, &close/2)
        stats = if frame.counted, do: add(stats, frame, took), else: stats
        {Map.put(stacks, ev.pid, {bump_parent(rest, took), open}), stats}

      {_, []} ->
        {stacks, stats}
    end
  end

  defp close(%{counted: true, key: k}, open), do: Map.update!(open, k, &(&1 - 1))
  defp close(_frame, open), do: open

  defp add(stats, frame, took) do
    acc = if frame.nested, do: 0, else: took
    own = took - frame.children

    Map.update(stats, frame.key, %{count: 1, acc_time: acc, own_time: own}, fn s ->
      %{count: s.count + 1, acc_time: s.acc_time + acc, own_time: s.own_time + own}
    end)
  end

  defp bump_parent([parent | rest], took),
    do: [%{parent | children: parent.children + took} | rest]

  defp bump_parent([], _took), do: []

  @doc """
  `call_stat/2` as a sorted list of `{key, stat}`: `sort_by:` `:acc_time`
  (default), `:own_time` or `:count`; `order:` `:desc` (default) or
  `:asc`; `limit:`.
  """
  @spec sorted_call_stat(term(), keyword()) :: [{term(), stat()}]
  def sorted_call_stat(key \\ :mfa, opts \\ []) do
    {sort_by, opts} = Keyword.pop(opts, :sort_by, :acc_time)
    {order, opts} = Keyword.pop(opts, :order, :desc)
    {limit, opts} = Keyword.pop(opts, :limit, :infinity)

    unless sort_by in [:acc_time, :own_time, :count],
      do:
        raise(
          ArgumentError,
          "sort_by must be :acc_time, :own_time or :count, got: #{inspect(sort_by)}"
        )

    unless order in [:asc, :desc],
      do: raise(ArgumentError, "order must be :asc or :desc, got: #{inspect(order)}")

    sorted = key |> call_stat(opts) |> Enum.sort_by(fn {_, s} -> s[sort_by] end, order)
    if limit == :infinity, do: sorted, else: Enum.take(sorted, limit)
  end

  @doc "Prints `sorted_call_stat/2` as an aligned table (times in µs)."
  @spec print_sorted_call_stat(term(), keyword()) :: :ok
  def print_sorted_call_stat(key \\ :mfa, opts \\ []) do
    rows =
      for {k, s} <- sorted_call_stat(key, opts) do
        [format_key(k), "#{s.count}", us(s.acc_time), us(s.own_time)]
      end

    table = [["key", "count", "acc µs", "own µs"] | rows]

    widths =
      table
      |> Enum.zip()
      |> Enum.map(fn col -> col |> Tuple.to_list() |> Enum.map(&String.length/1) |> Enum.max() end)

    for row <- table do
      [first | rest] = Enum.zip(row, widths)

      line = [
        String.pad_trailing(elem(first, 0), elem(first, 1))
        | Enum.map(rest, fn {c, w} -> String.pad_leading(c, w) end)
      ]

      IO.puts(Enum.join(line, "  "))
    end

    :ok
  end

  defp format_key({m, f, a}), do: "#{inspect(m)}.#{f}/#{a}"
  defp format_key(k), do: inspect(k)
  defp us(ns), do: :erlang.float_to_binary(ns / 1000, decimals: 1)

  # --- filters -------------------------------------------------------------

  @doc false
  # The native form of a filter's field conditions (for `ElixirScope.save/3`).
  def native_filter!(filter) do
    check_keys!(filter, @filter_keys -- [:match, :limit], "filter")
    native_filter(filter)
  end

  defp native_filter(filter) do
    {module, function, arity} = mfa!(filter)

    %{
      pid: pid!(filter),
      kinds: kinds!(filter),
      module: module || atom!(filter, :module),
      function: function,
      arity: arity,
      from: int!(filter, :from),
      to: int!(filter, :to),
      after: id_opt!(filter, :after),
      before: id_opt!(filter, :before),
      data: if(Keyword.has_key?(filter, :data), do: {:data, filter[:data]}, else: nil)
    }
  end

  defp check_keys!(kw, allowed, what) do
    unless is_list(kw) and Keyword.keyword?(kw),
      do: raise(ArgumentError, "expected a keyword list of #{what}s, got: #{inspect(kw)}")

    case Keyword.keys(kw) -- allowed do
      [] ->
        :ok

      [key | _] ->
        raise ArgumentError, "unknown #{what} #{inspect(key)} (known: #{inspect(allowed)})"
    end
  end

  defp pid!(filter) do
    case Keyword.get(filter, :pid) do
      nil -> nil
      pid when is_pid(pid) and node(pid) == node() -> pid
      other -> raise ArgumentError, "pid: expected a local pid, got: #{inspect(other)}"
    end
  end

  defp kinds!(filter) do
    kinds = filter |> Keyword.get(:type, []) |> List.wrap()

    case Enum.reject(kinds, &(&1 in @kinds)) do
      [] ->
        kinds

      [bad | _] ->
        raise ArgumentError,
              "type: unknown event type #{inspect(bad)} (known: #{inspect(@kinds)})"
    end
  end

  defp mfa!(filter) do
    case Keyword.get(filter, :mfa) do
      nil ->
        {nil, nil, nil}

      {m, f, a}
      when (is_atom(m) or m == :_) and is_atom(f) and (a == :_ or (is_integer(a) and a in 0..254)) ->
        {wild(m), wild(f), wild(a)}

      other ->
        raise ArgumentError,
              "mfa: expected {module, function, arity} (parts may be :_), got: #{inspect(other)}"
    end
  end

  defp wild(:_), do: nil
  defp wild(x), do: x

  defp atom!(filter, key) do
    case Keyword.get(filter, key) do
      a when is_atom(a) -> a
      other -> raise ArgumentError, "#{key}: expected an atom, got: #{inspect(other)}"
    end
  end

  defp int!(filter, key) do
    case Keyword.get(filter, key) do
      nil ->
        nil

      n when is_integer(n) ->
        n |> max(-0x8000_0000_0000_0000) |> min(0x7FFF_FFFF_FFFF_FFFF)

      other ->
        raise ArgumentError, "#{key}: expected an integer (monotonic ns), got: #{inspect(other)}"
    end
  end

  defp id_opt!(filter, key) do
    case Keyword.get(filter, key) do
      nil -> nil
      id when is_integer(id) and id >= 0 -> id
      other -> raise ArgumentError, "#{key}: expected an event id, got: #{inspect(other)}"
    end
  end

  defp id!(%CorrelatedEvent{event: %{id: id}}), do: id
  defp id!(id) when is_integer(id) and id > 0, do: id

  defp id!(other),
    do: raise(ArgumentError, "expected an event or an event id, got: #{inspect(other)}")

  defp limit!(filter) do
    case Keyword.get(filter, :limit, :infinity) do
      :infinity ->
        :infinity

      n when is_integer(n) and n >= 0 ->
        n

      other ->
        raise ArgumentError,
              "limit: expected a non-negative integer or :infinity, got: #{inspect(other)}"
    end
  end

  defp order!(opts) do
    case Keyword.get(opts, :order, :asc) do
      o when o in [:asc, :desc] -> o
      other -> raise ArgumentError, "order must be :asc or :desc, got: #{inspect(other)}"
    end
  end

  defp chunk_size!(opts) do
    case Keyword.get(opts, :chunk_size, 10_000) do
      n when is_integer(n) and n > 0 ->
        n

      other ->
        raise ArgumentError, "chunk_size must be a positive integer, got: #{inspect(other)}"
    end
  end
end
