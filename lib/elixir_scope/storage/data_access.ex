defmodule ElixirScope.Storage.DataAccess do
  @moduledoc """
  Queries and direct writes on the event store.

  The store is native, in memory and bounded by the events it holds
  (`storage.max_events`; the oldest arrivals are evicted first and
  counted). It is indexed by id, time (block-range index), pid,
  `{module, function}` and correlation id (a call finds its return, a send
  its receive). Results are built in chunks on a dirty scheduler; large
  ones can be streamed with `stream/1`.

  Queries return `%ElixirScope.CorrelatedEvent{}` lists. Options:

    * `:limit` — most events returned (default 1000; `:infinity` for all)
    * `:order` — `:asc` (oldest first, the default) or `:desc`
    * `:pipeline` — query the store of another pipeline server (default:
      the application's store)

  Bad arguments raise `ArgumentError`.
  """

  alias ElixirScope.{CorrelatedEvent, Event, Native}
  alias ElixirScope.Capture.PipelineManager

  @type opts :: [
          limit: pos_integer() | :infinity,
          order: :asc | :desc,
          pipeline: GenServer.server()
        ]

  @max_limit 0xFFFF_FFFF_FFFF_FFFF

  @doc "The `n` newest events, newest first."
  @spec query_recent(non_neg_integer(), keyword()) :: [CorrelatedEvent.t()]
  def query_recent(n, opts \\ [])

  def query_recent(n, opts) when is_integer(n) and n >= 0,
    do: Native.store_recent(store(opts), n)

  def query_recent(n, _opts),
    do: raise(ArgumentError, "n must be a non-negative integer, got: #{inspect(n)}")

  @doc "One event by id."
  @spec get_event(pos_integer(), keyword()) :: {:ok, CorrelatedEvent.t()} | {:error, :not_found}
  def get_event(id, opts \\ [])
  def get_event(id, opts) when is_integer(id) and id > 0, do: Native.store_get(store(opts), id)

  def get_event(id, _opts) when is_integer(id), do: {:error, :not_found}

  def get_event(id, _opts),
    do: raise(ArgumentError, "event id must be a positive integer, got: #{inspect(id)}")

  @doc "Events of one process, in id order."
  @spec query_by_pid(pid(), opts()) :: [CorrelatedEvent.t()]
  def query_by_pid(pid, opts \\ [])

  def query_by_pid(pid, opts) when is_pid(pid) do
    {limit, order} = limit_order(opts)
    Native.store_by_pid(store(opts), pid, limit, order)
  end

  def query_by_pid(pid, _opts), do: raise(ArgumentError, "expected a pid, got: #{inspect(pid)}")

  @doc "Events with `from_ns <= timestamp <= to_ns` (monotonic ns), ordered by time."
  @spec query_by_time_range(integer(), integer(), opts()) :: [CorrelatedEvent.t()]
  def query_by_time_range(from_ns, to_ns, opts \\ [])

  def query_by_time_range(from_ns, to_ns, opts) when is_integer(from_ns) and is_integer(to_ns) do
    {limit, order} = limit_order(opts)
    Native.store_by_time(store(opts), clamp64(from_ns), clamp64(to_ns), limit, order)
  end

  def query_by_time_range(from_ns, to_ns, _opts),
    do:
      raise(
        ArgumentError,
        "time range bounds must be integers (ns), got: #{inspect(from_ns)}, #{inspect(to_ns)}"
      )

  @doc """
  Events of `module.function` (any arity), in id order. With a `:limit`,
  the first (or, with `order: :desc`, the last) `limit` events of it to
  reach the store: processes on different shards reach it a batch apart,
  so these can differ slightly from the lowest (highest) ids.
  """
  @spec query_by_function(module(), atom(), opts()) :: [CorrelatedEvent.t()]
  def query_by_function(module, function, opts \\ [])

  def query_by_function(module, function, opts) when is_atom(module) and is_atom(function) do
    {limit, order} = limit_order(opts)
    Native.store_by_function(store(opts), module, function, limit, order)
  end

  def query_by_function(module, function, _opts),
    do:
      raise(
        ArgumentError,
        "module and function must be atoms, got: #{inspect(module)}, #{inspect(function)}"
      )

  @doc "All events sharing a correlation id (call and return, send and receive), oldest first."
  @spec query_by_correlation(pos_integer(), keyword()) :: [CorrelatedEvent.t()]
  def query_by_correlation(id, opts \\ [])

  def query_by_correlation(id, opts) when is_integer(id) and id > 0,
    do: Native.store_by_correlation(store(opts), id)

  def query_by_correlation(id, _opts),
    do: raise(ArgumentError, "correlation id must be a positive integer, got: #{inspect(id)}")

  @doc """
  Streams a query's events, read from the store in chunks, so a large
  result is never built at once: the same events, in the same order, as
  the matching query function.

  Options: at most one of `pid: pid`, `function: {module, function}`,
  `time: {from_ns, to_ns}` (none: every event, in id order); `:order`,
  `:limit` and `:pipeline` as in the queries (`:limit` defaults to
  `:infinity` here); `:chunk_size`, events read per step (default 10_000).

  The stream selects the matching events when it starts; an event evicted
  before its chunk is read is skipped.

      DataAccess.stream(function: {MyApp, :run}) |> Stream.filter(&slow?/1) |> Enum.take(10)
  """
  @spec stream(keyword()) :: Enumerable.t()
  def stream(opts \\ []) do
    query = stream_query(opts)
    {limit, order} = limit_order(Keyword.put_new(opts, :limit, :infinity))

    chunk =
      case Keyword.get(opts, :chunk_size, 10_000) do
        n when is_integer(n) and n > 0 ->
          n

        other ->
          raise ArgumentError, "chunk_size must be a positive integer, got: #{inspect(other)}"
      end

    unknown =
      Keyword.keys(opts) -- [:pid, :function, :time, :order, :limit, :pipeline, :chunk_size]

    if unknown != [], do: raise(ArgumentError, "unknown option #{inspect(hd(unknown))}")
    store = store(opts)

    cursor_stream(fn -> Native.store_select(store, query, limit, order) end, chunk)
  end

  @doc false
  # The events of a native cursor (`open` makes it), `chunk` at a time.
  def cursor_stream(open, chunk, next \\ &Native.cursor_next/2) do
    Stream.resource(
      open,
      fn cursor ->
        case next.(cursor, chunk) do
          [] -> {:halt, cursor}
          events -> {events, cursor}
        end
      end,
      fn _cursor -> :ok end
    )
  end

  defp stream_query(opts) do
    case Keyword.take(opts, [:pid, :function, :time]) do
      [] ->
        :recent

      [pid: pid] when is_pid(pid) ->
        {:pid, pid}

      [function: {m, f}] when is_atom(m) and is_atom(f) ->
        {:function, m, f}

      [time: {from, to}] when is_integer(from) and is_integer(to) ->
        {:time, clamp64(from), clamp64(to)}

      [_, _ | _] ->
        raise ArgumentError, "stream/1 takes at most one of :pid, :function and :time"

      [{key, value}] ->
        raise ArgumentError, "invalid #{inspect(key)} for stream/1: #{inspect(value)}"
    end
  end

  @doc "Removes events with `timestamp < before_ns`; returns how many."
  @spec cleanup_old_events(integer(), keyword()) :: {:ok, non_neg_integer()}
  def cleanup_old_events(before_ns, opts \\ [])

  def cleanup_old_events(before_ns, opts) when is_integer(before_ns),
    do: {:ok, Native.store_remove_before(store(opts), clamp64(before_ns))}

  def cleanup_old_events(before_ns, _opts),
    do: raise(ArgumentError, "expected a timestamp in ns, got: #{inspect(before_ns)}")

  @doc """
  Writes events straight into the store, bypassing rings and workers (ids
  are assigned here). Takes `%Event{}`, `%CorrelatedEvent{}` (its event is
  written) or compact tuples. Malformed events are skipped and reported.
  """
  @spec write_batch([Event.t() | CorrelatedEvent.t() | Event.compact()], keyword()) ::
          :ok | {:error, {:invalid_events, non_neg_integer(), [{non_neg_integer(), term()}]}}
  def write_batch(events, opts \\ [])

  def write_batch(events, opts) when is_list(events) do
    events = unwrap(events)

    max_payload = Keyword.get(opts, :max_payload_bytes, 4096)

    case Native.store_write(store(opts), events, max_payload) do
      {:ok, _n} -> :ok
      {:error, {:invalid_events, _, _}} = error -> error
    end
  end

  def write_batch(events, _opts),
    do: raise(ArgumentError, "expected a list of events, got: #{inspect(events, limit: 5)}")

  defp unwrap([%CorrelatedEvent{event: e} | rest]), do: [e | unwrap(rest)]
  defp unwrap([e | rest]), do: [e | unwrap(rest)]
  defp unwrap([]), do: []
  defp unwrap(_), do: raise(ArgumentError, "expected a proper list of events")

  @doc "Store counters: stored, retained, evicted, removed, memory_bytes, max_events."
  @spec stats(keyword()) :: map()
  def stats(opts \\ []), do: Native.store_stats(store(opts))

  @doc false
  # The store a call addresses: `store:` (a loaded trace), `pipeline:`'s,
  # else the application's.
  def store(opts) do
    case Keyword.get(opts, :store) do
      %ElixirScope.Store{ref: ref} ->
        ref

      nil ->
        pipeline_store(opts)

      other ->
        raise ArgumentError,
              "store: expected an %ElixirScope.Store{} (from ElixirScope.load/2), got: #{inspect(other)}"
    end
  end

  defp pipeline_store(opts) do
    case PipelineManager.server_option(opts) do
      {:ok, server} -> Native.pipeline_store(PipelineManager.pipeline(server))
      :error -> ElixirScope.Application.store()
    end
  end

  defp limit_order(opts) do
    PipelineManager.server_option(opts)

    limit =
      case Keyword.get(opts, :limit, 1000) do
        :infinity ->
          @max_limit

        n when is_integer(n) and n >= 0 ->
          n

        other ->
          raise ArgumentError,
                "limit must be a non-negative integer or :infinity, got: #{inspect(other)}"
      end

    order =
      case Keyword.get(opts, :order, :asc) do
        o when o in [:asc, :desc] -> o
        other -> raise ArgumentError, "order must be :asc or :desc, got: #{inspect(other)}"
      end

    {limit, order}
  end

  defp clamp64(n), do: n |> max(-0x8000_0000_0000_0000) |> min(0x7FFF_FFFF_FFFF_FFFF)
end
