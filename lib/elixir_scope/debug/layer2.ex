defmodule ElixirScope.Debug.Layer2 do
  @moduledoc """
  Debug views of a pipeline (guide §10.3).
  """

  alias ElixirScope.Capture.PipelineManager
  alias ElixirScope.Native

  @type dead_letter :: %{at: integer(), reason: term(), event: term()}

  @doc "The health checks of `ElixirScope.HealthCheck.Layer2.check_health/1` (the guide's name here)."
  @spec check_health(keyword()) :: {:ok, map()} | {:error, map()}
  def check_health(opts \\ []),
    do: ElixirScope.HealthCheck.Layer2.check_health(Keyword.get(opts, :pipeline, PipelineManager))

  @doc "Each worker thread's counters (`events_processed`, `batches`, `processing_time_us`, `panics`)."
  @spec worker_stats(keyword()) :: [map()]
  def worker_stats(opts \\ []), do: opts |> pipeline() |> workers()

  @doc """
  The newest `n` malformed events (newest first), as refused at ingest:
  the refusal time (monotonic ns), the reason and the event (truncated past
  `capture.max_payload_bytes`). The pipeline keeps the newest 1000; every
  one is counted in `ElixirScope.stats().dropped.invalid`.
  """
  @spec dead_letters(non_neg_integer(), keyword()) :: [dead_letter()]
  def dead_letters(n \\ 100, opts \\ [])

  def dead_letters(n, opts) when is_integer(n) and n >= 0,
    do: pipeline(opts) |> Native.pipeline_dead_letters(n) |> Map.fetch!(:letters)

  def dead_letters(n, _opts),
    do: raise(ArgumentError, "n must be a non-negative integer, got: #{inspect(n)}")

  @doc """
  Workers with their stats, shards with their positions, the correlator's
  state, the last pressure check and the newest dead letters.

  `term_reads` says how the NIF reads terms: `:direct` (term words read in
  place, checked against the NIF API when the library loaded) or
  `:nif_api` (one `enif_*` call per read, on a VM with another term layout).
  `struct_builds` says how query results are built: `:shared_keys` (every
  struct of a result shares one key tuple, checked at load) or `:nif_api`.
  """
  @spec get_pipeline_state(keyword()) :: map()
  def get_pipeline_state(opts \\ []) do
    handle = PipelineManager.from_options(opts)
    server = Keyword.get(opts, :pipeline, PipelineManager)
    check = GenServer.call(server, :check_state)
    letters = Native.pipeline_dead_letters(handle, 100)

    %{
      workers: workers(handle),
      buffers: Native.pipeline_stats(handle).shard_utilization,
      correlation_state: Native.correlator_stats(Native.pipeline_store(handle)),
      pressure: Map.take(check, [:pressure, :recommendation, :inputs, :shedding]),
      recent_errors: letters.letters,
      dead_letters: Map.take(letters, [:total, :evicted]),
      term_reads: Native.term_reads(),
      struct_builds: Native.struct_builds()
    }
  end

  @doc """
  One stored event's way through the pipeline (guide §10.3, C.2):

    * `ingestion_time` — monotonic ns when the pipeline stamped it at
      ingest (`nil` for an event that came with its own timestamp);
    * `processing_worker` — the worker thread that wrote it (`:direct` for
      `DataAccess.write_batch/2`); `storage_time`, `correlated_at` —
      monotonic ns;
    * `correlation_attempts` — what the correlator did, in order:
      `:no_partner_expected` (calls, spawns, state changes...),
      `{:matched_at_once, id}`, `:waited_as_pending` followed by
      `{:patched_later, id}` (its partner arrived), `:still_pending` or
      `:expired` (waited past `correlation.ttl_seconds`), `:orphaned` (a
      return matching no open call), `:patched_later` (a later change such
      as a lowered confidence);
    * `final_correlations` — `correlation_id`, `partner` (the event that
      joined it: a call's return, a send's receive), `confidence`, `links`.

  Returns `{:error, :not_found}` for an event not in the store. This costs
  nothing per event beyond two flag bits: the worker and storage time are
  kept once per batch.
  """
  @spec trace_event(pos_integer(), keyword()) :: {:ok, map()} | {:error, :not_found}
  def trace_event(id, opts \\ [])

  def trace_event(id, opts) when is_integer(id) and id > 0,
    do: Native.store_trace_event(ElixirScope.Storage.DataAccess.store(opts), id)

  def trace_event(id, _opts),
    do: raise(ArgumentError, "event id must be a positive integer, got: #{inspect(id)}")

  @doc """
  What the correlator holds (the runbook's view when correlation memory
  grows): `open_calls`, `[{pid, depth}]` deepest first (calls waiting for
  their return); pending message halves by age, `pending_sends_by_age` and
  `pending_receives_by_age` as `%{under_1s:, under_10s:, under_60s:,
  older:}`; `process_tree_edges`, `tracked_processes`; and the
  correlator's counters (`EventCorrelator.metrics/1`). Drop what is stale
  with `ElixirScope.EventCorrelator.force_cleanup/1`.
  """
  @spec dump_correlation_state(keyword()) :: map()
  def dump_correlation_state(opts \\ []) do
    store = ElixirScope.Storage.DataAccess.store(opts)
    dump = Native.correlator_dump(store)
    by_age = fn [a, b, c, d] -> %{under_1s: a, under_10s: b, under_60s: c, older: d} end

    %{
      dump
      | pending_sends_by_age: by_age.(dump.pending_sends_by_age),
        pending_receives_by_age: by_age.(dump.pending_receives_by_age)
    }
    |> Map.put(:metrics, Native.correlator_stats(store))
  end

  @doc """
  The pipeline's last pressure checks (up to 100, newest first), each with
  its inputs (fullest shard, ring-to-store p99, memory against the limit,
  error rate), the level, the worker count, the share of processes being
  shed (`shedding_ratio`; shedding picks processes by pid hash) and the
  events shed so far (`shed_events`), and what it did
  (`{:scaled, from, to}`, `{:shedding, :started | :stopped, mode}`,
  `{:pressure, from, to}`); the level changes, scaling and shedding
  actions among them; the events shed so far; and a plain-language
  `recommendation` from the newest check.
  """
  @spec backpressure_analysis(keyword()) :: map()
  def backpressure_analysis(opts \\ []) do
    server = Keyword.get(opts, :pipeline, PipelineManager)
    check = GenServer.call(server, :check_state)
    config = PipelineManager.get_config(server)
    checks = check.history
    actions = fn kind -> for c <- checks, a <- c.actions, elem(a, 0) == kind, do: {c.at_ms, a} end

    %{
      checks: checks,
      level_changes: actions.(:pressure),
      scaling: actions.(:scaled),
      shedding: actions.(:shedding),
      shed_events: (List.first(checks) || %{shed_events: 0}).shed_events,
      recommendation: recommend(check, config)
    }
  end

  defp recommend(%{inputs: nil}, _config), do: "No pressure check has run yet."

  defp recommend(%{pressure: pressure, inputs: i, shedding: shedding}, config) do
    bp = config.backpressure
    pct = fn x -> "#{round(x * 100)}%" end

    advice =
      [
        i.memory_ratio > bp.critical_memory &&
          "Layer 2 memory is at #{pct.(i.memory_ratio)} of backpressure.memory_limit_mb " <>
            "(#{bp.memory_limit_mb} MB): lower storage.max_events (now #{config.storage.max_events}) " <>
            "or raise the limit; ElixirScope.CapacityPlanning sizes both for a rate.",
        i.buffer_utilization > bp.high_threshold &&
          "The fullest ring shard is #{pct.(i.buffer_utilization)} full: the workers do not keep up " <>
            "with the producers. Check Debug.Layer2.get_pipeline_state/1 for a hot shard (one busy " <>
            "process maps to one shard); raise capture.ring_size for bursts, or trace fewer processes.",
        i.latency_p99_ms > bp.high_latency_ms &&
          "Ring-to-store p99 is #{Float.round(i.latency_p99_ms, 1)} ms: the workers lag; see the " <>
            "worker stats in Debug.Layer2.get_pipeline_state/1.",
        i.error_rate > bp.high_error_rate &&
          "#{pct.(i.error_rate)} of recent events were dropped: ElixirScope.stats().dropped names " <>
            "the causes; producers that must not lose events can ingest with on_full: :wait.",
        shedding != :off &&
          "Load shedding is on (#{shedding}): whole processes are being dropped " <>
            "(ElixirScope.stats().dropped.shed)."
      ]
      |> Enum.filter(& &1)

    case advice do
      [] -> "Pressure is #{pressure}: no action needed."
      lines -> "Pressure is #{pressure}. " <> Enum.join(lines, " ")
    end
  end

  defp workers(handle) do
    for id <- Native.pipeline_worker_ids(handle),
        {:ok, w} <- [Native.pipeline_worker_stats(handle, id)],
        do: w
  end

  defp pipeline(opts), do: PipelineManager.from_options(opts)
end
