defmodule ElixirScope.Tracer do
  @moduledoc """
  Captures real executions with the VM's tracing, straight into the native
  pipeline: the NIF module is the tracer (`{:tracer, ElixirScope.Native,
  session}`), so a trace event goes from the traced process into a ring
  shard with no message and no tracer process in between.

  Every session has limits (`max_events`, `rate_limit`, `duration_ms`) and
  ends when its owner dies; the first limit that trips stops it at once
  and is reported as `stopped_because`. One session runs at a time. See
  `ElixirScope.trace/1` for the options.
  """

  alias ElixirScope.Tracer.{Options, Server, Session}

  @type stop_reason :: :max_events | :rate_limit | :duration | :owner_down | :requested

  @type info :: %{
          events: non_neg_integer(),
          state_changes: non_neg_integer(),
          dropped: non_neg_integer(),
          dropped_by_cause: %{
            after_stop: non_neg_integer(),
            buffer_full: non_neg_integer(),
            unreadable: non_neg_integer()
          },
          stopped_because: stop_reason() | nil,
          running: boolean()
        }

  @doc "Starts a session; see `ElixirScope.trace/1`."
  @spec start(keyword()) :: {:ok, Session.t()} | {:error, term()}
  def start(opts) do
    with {:ok, o} <- Options.parse(opts),
         :ok <- pipeline_running(o.pipeline) do
      case DynamicSupervisor.start_child(ElixirScope.Tracer.Supervisor, {Server, o}) do
        {:ok, server} -> {:ok, GenServer.call(server, :session)}
        {:error, {:already_started, server}} -> {:error, {:session_active, server}}
        {:error, reason} -> {:error, reason}
      end
    end
  end

  defp pipeline_running(server) do
    ElixirScope.Capture.PipelineManager.pipeline(server)
    :ok
  rescue
    ArgumentError -> {:error, {:no_pipeline, server}}
  end

  @doc "Stops a session (if still running) and returns its final counters."
  @spec stop(Session.t()) :: {:ok, info()}
  def stop(%Session{} = s) do
    Server.stop(s.server, :requested)
    {:ok, info(s)}
  end

  def stop(other), do: raise(ArgumentError, "not a trace session: #{inspect(other)}")

  @doc "The session's counters now."
  @spec info(Session.t()) :: info()
  def info(%Session{} = s) do
    s.ref
    |> ElixirScope.Native.trace_session_info()
    |> Map.take([:events, :state_changes, :dropped, :dropped_by_cause, :stopped_because])
    |> then(&Map.put(&1, :running, &1.stopped_because == nil and Process.alive?(s.server)))
  end

  def info(other), do: raise(ArgumentError, "not a trace session: #{inspect(other)}")
end
