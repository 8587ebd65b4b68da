defmodule ElixirScope.Tracer.Session do
  @moduledoc """
  A running or finished trace session, as returned by `ElixirScope.trace/1`.

  The session's counters live natively and stay readable after it stops:
  see `ElixirScope.trace_info/1`.
  """

  @enforce_keys [:ref, :server, :owner, :options, :started_at]
  defstruct @enforce_keys

  @type t :: %__MODULE__{
          ref: reference(),
          server: pid(),
          owner: pid(),
          options: ElixirScope.Tracer.Options.t(),
          started_at: integer()
        }

  defimpl Inspect do
    import Inspect.Algebra

    def inspect(session, opts) do
      info = ElixirScope.Native.trace_session_info(session.ref)

      status =
        case info.stopped_because do
          nil -> "running"
          reason -> "stopped: #{reason}"
        end

      concat([
        "#ElixirScope.Trace<",
        status,
        ", #{info.events} events, #{info.dropped} dropped, pids: ",
        to_doc(session.options.pids, opts),
        ">"
      ])
    end
  end
end
