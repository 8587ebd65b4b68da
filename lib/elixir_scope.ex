defmodule ElixirScope do
  @moduledoc """
  ElixirScope Layer 2: asynchronous processing and correlation of BEAM
  execution events, in a native (Rust) pipeline.

      event = %ElixirScope.Event{type: :function_call, pid: self(),
                                 module: MyApp, function: :run, arity: 1, data: [42]}
      {:ok, id} = ElixirScope.ingest(event)
      :ok = ElixirScope.flush()
      {:ok, stored} = ElixirScope.Storage.DataAccess.get_event(id)

  Events flow into lock-free ring shards (one per pid hash, so per-process
  order is kept), native worker threads drain them in batches into an
  indexed, bounded store. Every event is either stored or counted in a
  named drop bucket: see `stats/0`.

  Functions take `pipeline: server` to target a pipeline other than the
  default one.
  """

  import Bitwise

  alias ElixirScope.Capture.PipelineManager
  alias ElixirScope.{Event, Native}

  @type invalid_reason :: :not_an_event | {field :: atom(), problem :: atom()}

  @typedoc """
  Options of `ingest/2` and `ingest_batch/2`:

    * `:pipeline` — the pipeline server (default: the application's).
    * `:on_full` — `:drop` (the default) never blocks: an event whose shard
      is full is refused and counted in `stats().dropped.buffer_full`.
      `:wait` waits (sleeping, never spinning a scheduler) until its shard
      has room, so nothing is lost; events ingested this way are never
      shed. For producers that must keep every event: loading a saved
      trace, replaying a workload, tests, batch jobs. Trace sessions always
      drop: a traced process never waits.
    * `:timeout` — with `on_full: :wait`, the longest wait in ms (default
      5000, or `:infinity`), after which the call returns
      `{:error, {:timeout, queued_so_far}}`.

  Any other option raises `ArgumentError`.
  """
  @type ingest_opts :: [
          pipeline: GenServer.server(),
          on_full: :drop | :wait,
          timeout: non_neg_integer() | :infinity
        ]

  @doc """
  Queues one event (`%Event{}` or the compact tuple). Returns its id,
  `{:error, :buffer_full}` when its shard is full under `:drop_newest`
  (counted in `stats().dropped.buffer_full`), or `{:error, :load_shed}`
  when its process is being shed under load (`stats().dropped.shed`, see
  `ElixirScope.Capture.BackpressureManager`). A malformed event is refused,
  counted in `stats().dropped.invalid` and kept as a dead letter
  (`ElixirScope.Debug.Layer2.dead_letters/2`). With `on_full: :wait` (see
  `t:ingest_opts/0`) a full shard is waited for instead.
  """
  @spec ingest(Event.t() | Event.compact(), ingest_opts()) ::
          {:ok, pos_integer()}
          | {:error,
             :buffer_full
             | :load_shed
             | {:invalid_event, invalid_reason()}
             | {:timeout, 0}}
  def ingest(event, opts \\ [])
  # The common shapes skip the option walk (this is a hot path).
  def ingest(event, []), do: Native.pipeline_ingest(pipeline([]), event, :drop)

  def ingest(event, [pipeline: _] = opts),
    do: Native.pipeline_ingest(pipeline(opts), event, :drop)

  def ingest(event, opts) do
    case ingest_options(opts, "ingest/2") do
      {handle, :drop, _} -> Native.pipeline_ingest(handle, event, :drop)
      {handle, :wait, deadline} -> ingest_waiting(handle, event, deadline)
    end
  end

  defp ingest_waiting(handle, event, deadline) do
    case Native.pipeline_ingest(handle, event, :wait) do
      {:error, :buffer_full} ->
        if expired?(deadline) do
          {:error, {:timeout, 0}}
        else
          wait_for_room()
          ingest_waiting(handle, event, deadline)
        end

      result ->
        result
    end
  end

  @doc """
  Queues a list of events in order. Returns `{:ok, queued}`; malformed
  events are skipped and reported as
  `{:error, {:invalid_events, queued, [{index, reason}]}}` (indexes from 0)
  and kept as dead letters. Under `on_full: :drop` (the default), events
  refused by a full shard or shed are not in `queued` and are counted in
  `stats/0`; under `on_full: :wait` every valid event is queued, in order,
  or the call gives up after `:timeout` with
  `{:error, {:timeout, queued_so_far}}` (see `t:ingest_opts/0`).
  """
  @spec ingest_batch([Event.t() | Event.compact()], ingest_opts()) ::
          {:ok, non_neg_integer()}
          | {:error,
             {:invalid_events, non_neg_integer(), [{non_neg_integer(), invalid_reason()}]}
             | {:timeout, non_neg_integer()}
             | :not_a_list}
  def ingest_batch(events, opts \\ [])

  def ingest_batch(events, []), do: Native.pipeline_ingest_batch(pipeline([]), events, :drop, 0)

  def ingest_batch(events, [pipeline: _] = opts),
    do: Native.pipeline_ingest_batch(pipeline(opts), events, :drop, 0)

  def ingest_batch(events, opts) do
    case ingest_options(opts, "ingest_batch/2") do
      {handle, :drop, _} -> Native.pipeline_ingest_batch(handle, events, :drop, 0)
      {handle, :wait, deadline} -> ingest_batch_waiting(handle, events, 0, deadline, 0, [])
    end
  end

  defp ingest_batch_waiting(handle, events, index, deadline, queued, bad) do
    case Native.pipeline_ingest_batch(handle, events, :wait, index) do
      {:full, n, more_bad, index, rest} ->
        queued = queued + n

        if expired?(deadline) do
          {:error, {:timeout, queued}}
        else
          wait_for_room()
          ingest_batch_waiting(handle, rest, index, deadline, queued, bad ++ more_bad)
        end

      {:ok, n} when bad == [] ->
        {:ok, queued + n}

      {:ok, n} ->
        {:error, {:invalid_events, queued + n, bad}}

      {:error, {:invalid_events, n, more_bad}} ->
        {:error, {:invalid_events, queued + n, bad ++ more_bad}}

      {:error, :not_a_list} = error ->
        error
    end
  end

  # The workers free a shard's room at millions of events per second: a
  # millisecond's sleep lets them drain a good part of it, without a poll
  # that would take a scheduler from them.
  defp wait_for_room, do: Process.sleep(1)

  defp expired?(:infinity), do: false
  defp expired?(deadline), do: System.monotonic_time(:millisecond) >= deadline

  @ingest_options [:pipeline, :on_full, :timeout]

  defp ingest_options(opts, fun) do
    unless is_list(opts) and Keyword.keyword?(opts),
      do: raise(ArgumentError, "#{fun}: options must be a keyword list, got: #{inspect(opts)}")

    case Keyword.keys(opts) -- @ingest_options do
      [] ->
        :ok

      [key | _] ->
        raise ArgumentError,
              "#{fun}: unknown option #{inspect(key)} (known: :pipeline, :on_full, :timeout)"
    end

    on_full =
      case Keyword.get(opts, :on_full, :drop) do
        mode when mode in [:drop, :wait] ->
          mode

        other ->
          raise ArgumentError, "#{fun}: on_full must be :drop or :wait, got: #{inspect(other)}"
      end

    deadline =
      case Keyword.get(opts, :timeout, 5_000) do
        :infinity ->
          :infinity

        ms when is_integer(ms) and ms >= 0 ->
          System.monotonic_time(:millisecond) + ms

        other ->
          raise ArgumentError,
                "#{fun}: timeout must be a non-negative integer (ms) or :infinity, got: #{inspect(other)}"
      end

    {pipeline(opts), on_full, deadline}
  end

  @doc """
  Waits until every event queued before the call (in every running
  pipeline, or in `pipeline:` only) is stored or counted as dropped.
  """
  @spec flush(timeout(), keyword()) :: :ok | {:error, :timeout}
  def flush(timeout \\ 5_000, opts \\ [])

  def flush(timeout, opts) when (is_integer(timeout) and timeout >= 0) or timeout == :infinity do
    handles =
      case PipelineManager.server_option(opts) do
        {:ok, server} -> [PipelineManager.pipeline(server)]
        :error -> PipelineManager.all_pipelines()
      end

    targets = Enum.map(handles, &{&1, Native.pipeline_flush_targets(&1)})

    deadline =
      if timeout == :infinity, do: :infinity, else: System.monotonic_time(:millisecond) + timeout

    wait_flushed(targets, deadline, 1)
  end

  def flush(timeout, _opts),
    do:
      raise(
        ArgumentError,
        "timeout must be a non-negative integer or :infinity, got: #{inspect(timeout)}"
      )

  defp wait_flushed(targets, deadline, sleep_ms) do
    pending = Enum.reject(targets, fn {h, t} -> Native.pipeline_flushed(h, t) end)

    cond do
      pending == [] ->
        :ok

      deadline != :infinity and System.monotonic_time(:millisecond) >= deadline ->
        {:error, :timeout}

      true ->
        Process.sleep(sleep_ms)
        wait_flushed(pending, deadline, min(sleep_ms * 2, 10))
    end
  end

  @typedoc "See `stats/1`."
  @type stats :: %{
          ingested: non_neg_integer(),
          stored: non_neg_integer(),
          retained: non_neg_integer(),
          dropped: %{
            invalid: non_neg_integer(),
            buffer_full: non_neg_integer(),
            overwritten: non_neg_integer(),
            worker_crash: non_neg_integer(),
            shed: non_neg_integer()
          },
          dropped_total: non_neg_integer(),
          evicted: non_neg_integer(),
          queued: non_neg_integer(),
          workers: non_neg_integer(),
          memory_bytes: non_neg_integer()
        }

  @doc """
  Pipeline and store counters. `ingested == stored + dropped_total + queued`
  always holds for a pipeline (exactly once it is quiescent). `stored`
  counts events this pipeline wrote; `retained`, `evicted` (by
  `max_events` or `DataAccess.cleanup_old_events/1`) and `memory_bytes`
  (rings plus store) describe its store.
  """
  @spec stats(keyword()) :: stats()
  def stats(opts \\ []) do
    handle = pipeline(opts)
    p = Native.pipeline_stats(handle)
    s = Native.store_stats(Native.pipeline_store(handle))

    %{
      ingested: p.ingested,
      stored: p.stored,
      retained: s.retained,
      dropped: p.dropped,
      dropped_total: p.dropped_total,
      evicted: s.evicted + s.removed,
      queued: p.queued,
      workers: p.workers,
      memory_bytes: p.ring_memory_bytes + s.memory_bytes
    }
  end

  @doc """
  Traces live processes into the pipeline, with no instrumentation.

      {:ok, session} = ElixirScope.trace(pids: pid, descendants: true,
                                         calls: [MyApp.Worker], messages: true)

  What to trace:

    * `pids:` a pid, a list of pids, `:new` (processes spawned from now on),
      `:existing` or `:all`. Required.
    * `descendants:` follow the processes they spawn (default `false`).
    * `calls:` modules and `{module, function, arity}` patterns (`:_` for
      any function or arity), or `:all`; each call's return or exception is
      traced too. Callbacks of GenServer modules listed here also yield
      `:state_change` events (`%{old: state, new: state}`, only when the
      state changed), caused by the message being handled.
    * `messages:` sends and receives (default `false`); receives carry
      their sender, so message links are exact.
    * `procs:` spawns, exits, links and unlinks (default `false`).
    * `payloads:` `:full` (up to the pipeline's `max_payload_bytes`, the
      default), `:none`, or a byte limit; bigger terms are stored as
      `{:truncated, size, hint}`.

  Limits (the first one reached stops the session at once):

    * `max_events:` default 100_000.
    * `rate_limit:` `{n, ms}`: more than `n` events within `ms`.
    * `duration_ms:` default 60_000.

  The session also ends when its `owner:` (default: the caller) exits.
  `pids: :all | :new | :existing` with `calls: :all` is refused unless
  `allow_all: true`. A process another tool (dbg, recon_trace) already
  traces gives `{:error, {:already_traced, pid, tracer}}`; only one
  session runs at a time (`{:error, {:session_active, server}}`). The
  pipeline's own processes are never traced.

  Errors: `{:error, {:unknown_option, key}}`, `{:error, {:invalid_option,
  key, value}}`, `{:error, {:missing_option, :pids}}`,
  `{:error, :nothing_to_trace}`, `{:error, {:too_broad, why}}`,
  `{:error, {:no_such_process, pid}}`, `{:error, {:module_not_found, m}}`,
  `{:error, {:no_functions_match, mfa}}`, `{:error, {:no_pipeline, server}}`.
  """
  @spec trace(keyword()) :: {:ok, ElixirScope.Tracer.Session.t()} | {:error, term()}
  defdelegate trace(opts), to: ElixirScope.Tracer, as: :start

  @doc """
  Stops a trace session and returns its counters:
  `{:ok, %{events: n, dropped: d, stopped_because: reason, ...}}`.
  `stopped_because` is the limit that had stopped it, or `:requested`.
  """
  @spec stop_trace(ElixirScope.Tracer.Session.t()) :: {:ok, ElixirScope.Tracer.info()}
  defdelegate stop_trace(session), to: ElixirScope.Tracer, as: :stop

  @doc "A trace session's counters now (see `stop_trace/1`), and whether it runs."
  @spec trace_info(ElixirScope.Tracer.Session.t()) :: ElixirScope.Tracer.info()
  defdelegate trace_info(session), to: ElixirScope.Tracer, as: :info

  @doc """
  Saves the events `filter` selects (the keys of
  `ElixirScope.Query.select/2` but `match:` and `limit:`; default: all) with their links and the
  process tree to the file `path`, written natively and streamed (never
  the whole trace in memory). Options: `pipeline:` or `store:`, the store
  to read. Returns `{:ok, %{events: n, bytes: size}}` or
  `{:error, {:file, message}}`.

  The file is versioned, its frames compressed and checksummed; atoms and
  pids are saved by name and number, so any VM can load it.
  """
  @spec save(Path.t(), keyword(), keyword()) ::
          {:ok, %{events: non_neg_integer(), bytes: non_neg_integer()}} | {:error, term()}
  def save(path, filter \\ [], opts \\ []) when is_binary(path) do
    case Keyword.keys(opts) -- [:pipeline, :store] do
      [] ->
        :ok

      [key | _] ->
        raise ArgumentError, "unknown option #{inspect(key)} (known: :pipeline, :store)"
    end

    store = ElixirScope.Storage.DataAccess.store(opts)

    Native.trace_save(
      store,
      ElixirScope.Query.native_filter!(filter),
      path,
      Atom.to_string(node()),
      System.monotonic_time(:nanosecond),
      System.os_time(:nanosecond)
    )
  end

  @doc """
  Loads a trace saved by `save/3` into a fresh store:
  `{:ok, %ElixirScope.Store{}}`, which every `DataAccess`, `Query` and
  `Export` function reads with `store: store`. Options: `max_events:`
  (default: all of them), `partial:` (default `false`).

  A damaged file gives `{:error, {:corrupt, offset, reason}}` (`offset`
  where the bad frame starts) and never crashes the VM; with
  `partial: true` the intact frames load and the store's `lost` counts the
  events of the frames that could not be read (it also counts events the
  file gives out of id order, over 2^28 ids apart, or naming atoms or pids
  it never listed). A file from a newer format
  gives `{:error, {:unsupported_version, v}}`; one naming more than 100,000
  atoms this VM does not have gives `{:error, :too_many_atoms}`. Pids are
  loaded as pids of this node with the saved numbers.
  """
  @spec load(Path.t(), keyword()) :: {:ok, ElixirScope.Store.t()} | {:error, term()}
  def load(path, opts \\ []) when is_binary(path) do
    max = Keyword.get(opts, :max_events, 1 <<< 30)
    partial = Keyword.get(opts, :partial, false)

    unless is_integer(max) and max > 0,
      do: raise(ArgumentError, "max_events must be a positive integer, got: #{inspect(max)}")

    unless is_boolean(partial),
      do: raise(ArgumentError, "partial must be a boolean, got: #{inspect(partial)}")

    case Native.trace_load(path, max, partial) do
      {:ok, ref, info} ->
        fields = Map.take(info, [:events, :lost, :node, :saved_at])
        {:ok, struct!(ElixirScope.Store, Map.merge(fields, %{ref: ref, path: path}))}

      {:error, _} = error ->
        error
    end
  end

  @doc """
  Prints the call `id`'s tree across processes (see
  `ElixirScope.Export.call_tree/2`): nested calls with durations and
  results, messages sent and the calls they caused in their receivers.
  """
  @spec print_call_tree(pos_integer(), keyword()) :: :ok
  def print_call_tree(id, opts \\ []), do: IO.write(ElixirScope.Export.call_tree(id, opts))

  defp pipeline(opts), do: PipelineManager.from_options(opts)
end
