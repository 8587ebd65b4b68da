defmodule ElixirScope.EventCorrelator do
  @moduledoc """
  Causal links between events (guide §2.3), computed natively.

  Every event a pipeline stores passes through its store's correlator on
  the worker threads; these functions query that correlator or use it
  directly:

    * **function calls**: a call's `correlation_id` is its own id, its
      return or exception carries the same, linked `{:completes, call_id}`;
      nested calls link `{:called_from, parent_id}`.
    * **messages**: a receive carries its send's id as `correlation_id`,
      linked `{:receives, send_id}`, whichever half arrived first. When
      identical messages from several senders make the match uncertain,
      `correlation_confidence` is `1 / senders`; a certain link is 1.0.
    * **processes**: a child's first root call links `{:spawned_by,
      spawn_id}`; `process_tree/1` lists spawns.
    * **state and causes**: a `:state_change`, and a root call right after
      a receive, link `{:caused_by, receive_id}`.

  `get_correlation_chain/2` walks these links back to the root cause.
  Functions take `pipeline: server` to use that pipeline's store.
  """

  alias ElixirScope.{CorrelatedEvent, Event, Native}
  alias ElixirScope.Storage.DataAccess

  @link_types [:called_from, :completes, :receives, :spawned_by, :caused_by]

  @doc """
  Correlates one event (an id is assigned when it has none) against the
  same state as the pipeline, without storing it.
  """
  @spec correlate_event(Event.t() | Event.compact(), keyword()) :: CorrelatedEvent.t()
  def correlate_event(event, opts \\ []) do
    [correlated] = correlate_batch([event], opts)
    correlated
  end

  @doc "Correlates events in order; see `correlate_event/2`."
  @spec correlate_batch([Event.t() | Event.compact()], keyword()) :: [CorrelatedEvent.t()]
  def correlate_batch(events, opts \\ [])

  def correlate_batch(events, opts) when is_list(events) do
    max_payload = Keyword.get(opts, :max_payload_bytes, 4096)

    case Native.correlator_correlate(DataAccess.store(opts), events, max_payload) do
      {:ok, correlated} ->
        correlated

      {:error, {:invalid_events, _, bad}} ->
        raise ArgumentError, "invalid events (index, reason): #{inspect(bad)}"

      {:error, :not_a_list} ->
        raise ArgumentError, "expected a proper list of events"
    end
  end

  def correlate_batch(events, _opts),
    do: raise(ArgumentError, "expected a list of events, got: #{inspect(events, limit: 5)}")

  @doc """
  Adds the link `{link_type, to_id}` to the stored event `from_id`.
  `link_type` is one of #{inspect(@link_types)}.
  """
  @spec establish_link(pos_integer(), pos_integer(), atom(), keyword()) ::
          :ok | {:error, :not_found | :invalid_link_type}
  def establish_link(from_id, to_id, link_type, opts \\ [])

  def establish_link(from_id, to_id, link_type, opts)
      when is_integer(from_id) and from_id > 0 and is_integer(to_id) and to_id > 0 do
    Native.correlator_link(DataAccess.store(opts), from_id, to_id, link_type)
  end

  def establish_link(from_id, to_id, _type, _opts),
    do:
      raise(
        ArgumentError,
        "event ids must be positive integers, got: #{inspect(from_id)}, #{inspect(to_id)}"
      )

  @doc """
  The stored events leading to `event_id`, root cause first, ending with
  the event itself: from a return to its call, from a call to its caller,
  from a root call to the receive that triggered it, from a receive to its
  send, and from a send into the sender's call stack. Empty when the event
  is not stored.
  """
  @spec get_correlation_chain(pos_integer(), keyword()) :: [CorrelatedEvent.t()]
  def get_correlation_chain(event_id, opts \\ [])

  def get_correlation_chain(event_id, opts) when is_integer(event_id) and event_id > 0,
    do: Native.correlator_chain(DataAccess.store(opts), event_id)

  def get_correlation_chain(event_id, _opts),
    do: raise(ArgumentError, "event id must be a positive integer, got: #{inspect(event_id)}")

  @doc """
  Drops correlation state older than `correlation.ttl_seconds` (pending
  message halves, idle processes, exited processes' tree edges). Also runs
  by itself every `correlation.cleanup_interval_ms`.
  """
  @spec cleanup_expired_correlations(keyword()) :: {:ok, non_neg_integer()}
  def cleanup_expired_correlations(opts \\ []),
    do: {:ok, Native.correlator_cleanup(DataAccess.store(opts))}

  @doc """
  Drops correlation state now, whatever the TTL (the guide's runbook step
  for correlation memory growing): pending message halves and idle process
  contexts older than `older_than_ms:` (default `0`: all of them). Links
  whose other half arrives later are lost; the dropped entries are counted
  in `metrics/1`'s `evicted`. Returns how many entries went.
  """
  @spec force_cleanup(keyword()) :: {:ok, non_neg_integer()}
  def force_cleanup(opts \\ []) do
    older_than =
      case Keyword.get(opts, :older_than_ms, 0) do
        ms when is_integer(ms) and ms >= 0 ->
          ms

        other ->
          raise ArgumentError,
                "older_than_ms must be a non-negative integer, got: #{inspect(other)}"
      end

    store = DataAccess.store(Keyword.delete(opts, :older_than_ms))
    {:ok, Native.correlator_force_cleanup(store, older_than * 1_000_000)}
  end

  @typedoc "See `metrics/1`."
  @type metrics :: %{
          correlated: non_neg_integer(),
          linkable: non_neg_integer(),
          linked: non_neg_integer(),
          success_rate: float(),
          orphaned_events: non_neg_integer(),
          unfinished_calls: non_neg_integer(),
          ambiguous_matches: non_neg_integer(),
          depth_overflows: non_neg_integer(),
          unaddressed_sends: non_neg_integer(),
          expired: non_neg_integer(),
          evicted: non_neg_integer(),
          pending_sends: non_neg_integer(),
          pending_receives: non_neg_integer(),
          active_correlations: non_neg_integer(),
          tracked_processes: non_neg_integer(),
          missed_patches: non_neg_integer(),
          memory_bytes: non_neg_integer(),
          cross_node: %{
            sends: non_neg_integer(),
            receives: non_neg_integer(),
            linked: non_neg_integer(),
            ambiguous: non_neg_integer(),
            waiting_sends: non_neg_integer(),
            waiting_receives: non_neg_integer(),
            dropped: non_neg_integer(),
            busy_ns: non_neg_integer()
          }
        }

  @doc """
  Correlator counters. `success_rate` is `linked / linkable`: the share of
  returns, exceptions and receives that found their call or send.
  `orphaned_events` are returns with no open call; `unfinished_calls` were
  closed by an outer return or an exit (their `correlation_confidence` is
  0.5); `evicted` and `expired` count state dropped by the bounds.

  `cross_node` counts messages between this node and others (told apart
  from a trace session's start on): `sends` and `receives`; during
  cluster sessions they are set aside for the exchange
  (`ElixirScope.Cluster.link/1`), outside they are left unlinked (their
  other half is on the other node, so none waits here). Then the
  receives linked here (`ambiguous` below confidence 1.0), what waits for
  its other half, `dropped`: halves given up past the bounds, no longer
  stored when read, or left over when a new session started, and
  `busy_ns`: the time the exchange's native steps took on this node, in
  ns (their cost to it: they run on dirty schedulers).
  """
  @spec metrics(keyword()) :: metrics()
  def metrics(opts \\ []), do: Native.correlator_stats(DataAccess.store(opts))

  @doc "Known spawns: `%{parent_pid => [child_pid]}`, children in spawn order."
  @spec process_tree(keyword()) :: %{pid() => [pid()]}
  def process_tree(opts \\ []) do
    opts
    |> DataAccess.store()
    |> Native.correlator_process_tree()
    |> Enum.group_by(fn {parent, _, _} -> parent end, fn {_, child, _} -> child end)
  end
end
