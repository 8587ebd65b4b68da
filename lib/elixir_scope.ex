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

  alias ElixirScope.Capture.PipelineManager
  alias ElixirScope.{Event, Native}

  @type invalid_reason :: :not_an_event | {field :: atom(), problem :: atom()}

  @doc """
  Queues one event (`%Event{}` or the compact tuple). Returns its id,
  `{:error, :buffer_full}` when its shard is full under `:drop_newest`
  (counted in `stats().dropped.buffer_full`), or `{:error, :load_shed}`
  when its process is being shed under load (`stats().dropped.shed`, see
  `ElixirScope.Capture.BackpressureManager`). A malformed event is refused,
  counted in `stats().dropped.invalid` and kept as a dead letter
  (`ElixirScope.Debug.Layer2.dead_letters/2`).
  """
  @spec ingest(Event.t() | Event.compact(), keyword()) ::
          {:ok, pos_integer()}
          | {:error, :buffer_full | :load_shed | {:invalid_event, invalid_reason()}}
  def ingest(event, opts \\ []), do: Native.pipeline_ingest(pipeline(opts), event)

  @doc """
  Queues a list of events in order. Returns `{:ok, queued}`; malformed
  events are skipped and reported as
  `{:error, {:invalid_events, queued, [{index, reason}]}}` (indexes from 0)
  and kept as dead letters. Events refused by a full shard or shed are not
  in `queued` and are counted in `stats/0`.
  """
  @spec ingest_batch([Event.t() | Event.compact()], keyword()) ::
          {:ok, non_neg_integer()}
          | {:error,
             {:invalid_events, non_neg_integer(), [{non_neg_integer(), invalid_reason()}]}
             | :not_a_list}
  def ingest_batch(events, opts \\ []), do: Native.pipeline_ingest_batch(pipeline(opts), events)

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

  defp pipeline(opts), do: PipelineManager.from_options(opts)
end
