defmodule ElixirScope.Storage.AsyncWriterPool do
  @moduledoc """
  The worker threads of a pipeline (the default one unless a pipeline
  server is given).

  Workers are native threads: each repeatedly takes the lease of any free
  ring shard, drains a batch (`processing.batch_size`) into the store and
  releases it, backing off exponentially (up to
  `processing.flush_interval_ms`) when every shard is empty. Worker ids are
  positive integers.
  """

  alias ElixirScope.Capture.PipelineManager
  alias ElixirScope.Native

  @type worker_id :: pos_integer()
  @type worker_stats :: %{
          id: worker_id(),
          events_processed: non_neg_integer(),
          batches: non_neg_integer(),
          current_batch_size: non_neg_integer(),
          processing_time_us: non_neg_integer(),
          panics: non_neg_integer()
        }

  @doc "Starts one more worker."
  @spec spawn_worker(GenServer.server()) :: {:ok, worker_id()} | {:error, :max_workers_reached}
  def spawn_worker(server \\ PipelineManager),
    do: Native.pipeline_spawn_worker(PipelineManager.pipeline(server))

  @doc "Stops a worker after its current batch."
  @spec remove_worker(GenServer.server(), worker_id()) :: :ok | {:error, :not_found}
  def remove_worker(server \\ PipelineManager, id)

  def remove_worker(server, id) when is_integer(id),
    do: Native.pipeline_remove_worker(PipelineManager.pipeline(server), id)

  def remove_worker(_server, id),
    do: raise(ArgumentError, "worker id must be an integer, got: #{inspect(id)}")

  @doc "Ids of the running workers."
  @spec list_workers(GenServer.server()) :: [worker_id()]
  def list_workers(server \\ PipelineManager),
    do: Native.pipeline_worker_ids(PipelineManager.pipeline(server))

  @doc "Counters of one worker; `{:error, :not_found}` for an unknown id."
  @spec get_worker_stats(GenServer.server(), worker_id()) :: worker_stats() | {:error, :not_found}
  def get_worker_stats(server \\ PipelineManager, id)

  def get_worker_stats(server, id) when is_integer(id) do
    case Native.pipeline_worker_stats(PipelineManager.pipeline(server), id) do
      {:ok, stats} -> stats
      error -> error
    end
  end

  def get_worker_stats(_server, id),
    do: raise(ArgumentError, "worker id must be an integer, got: #{inspect(id)}")
end
