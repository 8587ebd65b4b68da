defmodule ElixirScope.NativeLog do
  @moduledoc """
  Hands the native side's diagnostics to `Logger`: worker panics, store
  circuit breaker trips and recoveries, load shedding starting and stopping,
  trace sessions stopping. They are `tracing` events in the Rust code, kept
  in a bounded queue that this process drains every 100 ms; each becomes a
  log entry at its level (`:error`, `:warning`, `:info`) with its fields as
  metadata, plus `source: :elixir_scope_native`. A full queue drops and
  counts (a worker never waits for Logger); drops are reported as a warning.
  The application starts it.
  """
  use GenServer
  require Logger

  alias ElixirScope.Native

  @interval 100
  @batch 200

  @doc false
  def start_link(opts \\ []), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @doc "Drains the queue now (the process also does every 100 ms); returns how many were logged."
  @spec flush() :: non_neg_integer()
  def flush, do: GenServer.call(__MODULE__, :flush)

  @impl true
  def init(_opts) do
    Process.send_after(self(), :drain, @interval)
    {:ok, %{dropped: 0}}
  end

  @impl true
  def handle_call(:flush, _from, state) do
    {n, state} = drain(state, 0)
    {:reply, n, state}
  end

  @impl true
  def handle_info(:drain, state) do
    {_, state} = drain(state, 0)
    Process.send_after(self(), :drain, @interval)
    {:noreply, state}
  end

  defp drain(state, logged) do
    {records, dropped} = Native.native_logs_take(@batch)

    for {level, target, message, fields} <- records do
      metadata = [source: :elixir_scope_native, target: target] ++ metadata(fields)
      Logger.log(level, "elixir_scope: " <> message, metadata)
    end

    if dropped > state.dropped,
      do: Logger.warning("elixir_scope: #{dropped - state.dropped} native log events dropped")

    state = %{state | dropped: dropped}

    case length(records) do
      @batch -> drain(state, logged + @batch)
      n -> {logged + n, state}
    end
  end

  # Field names come from the native code: a small, fixed set of atoms.
  defp metadata(fields), do: for({k, v} <- fields, do: {String.to_atom(k), v})
end
