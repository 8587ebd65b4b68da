defmodule :telemetry do
  @moduledoc false
  # A stand-in for the :telemetry package (not a dependency, and hex is not
  # reachable): sends every event to the test processes that listen.

  def execute(event, measurements, metadata) do
    for pid <- ElixirScope.TestTelemetry.listeners(),
        do: send(pid, {:telemetry, event, measurements, metadata})

    :ok
  end
end

defmodule ElixirScope.TestTelemetry do
  @moduledoc false
  # Listeners of the :telemetry stand-in; a listener is dropped when it exits.

  @key {__MODULE__, :listeners}

  def listen do
    Code.ensure_loaded!(:telemetry)
    :global.trans({@key, self()}, fn -> :persistent_term.put(@key, [self() | listeners()]) end)
    me = self()

    ExUnit.Callbacks.on_exit(fn ->
      :global.trans({@key, me}, fn -> :persistent_term.put(@key, listeners() -- [me]) end)
    end)
  end

  def listeners, do: :persistent_term.get(@key, [])
end
