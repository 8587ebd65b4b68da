defmodule ElixirScope.Telemetry do
  @moduledoc false
  # Emits `:telemetry` events when the host application has `:telemetry`
  # (not a dependency: hex is not reachable). The check is whether
  # `:telemetry.execute/3` is loaded: a handler can only have been attached
  # through a loaded `:telemetry`, and the check never touches the file
  # system, so emitting without `:telemetry` costs one BIF call. See
  # `ElixirScope.Metrics.Layer2` for the events.

  @spec execute([atom()], map(), map()) :: :ok
  def execute(event, measurements, metadata) do
    if :erlang.function_exported(:telemetry, :execute, 3) do
      # Through apply/3: :telemetry is not known when this is compiled.
      apply(:telemetry, :execute, [event, measurements, metadata])
    end

    :ok
  end
end
