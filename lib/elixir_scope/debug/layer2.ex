defmodule ElixirScope.Debug.Layer2 do
  @moduledoc """
  Debug views of a pipeline (guide §10.3).
  """

  alias ElixirScope.Capture.PipelineManager
  alias ElixirScope.Native

  @type dead_letter :: %{at: integer(), reason: term(), event: term()}

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
      workers: worker_stats(handle),
      buffers: Native.pipeline_stats(handle).shard_utilization,
      correlation_state: Native.correlator_stats(Native.pipeline_store(handle)),
      pressure: Map.take(check, [:pressure, :recommendation, :inputs, :shedding]),
      recent_errors: letters.letters,
      dead_letters: Map.take(letters, [:total, :evicted]),
      term_reads: Native.term_reads(),
      struct_builds: Native.struct_builds()
    }
  end

  defp worker_stats(handle) do
    for id <- Native.pipeline_worker_ids(handle),
        {:ok, w} <- [Native.pipeline_worker_stats(handle, id)],
        do: w
  end

  defp pipeline(opts), do: PipelineManager.from_options(opts)
end
