defmodule ElixirScope.TestEvents do
  @moduledoc false
  # Event builders and a private-pipeline helper shared by the tests.

  alias ElixirScope.Capture.PipelineManager
  alias ElixirScope.Event

  def call(pid \\ self(), data \\ [1, 2]) do
    %Event{
      type: :function_call,
      pid: pid,
      module: __MODULE__,
      function: :work,
      arity: 2,
      data: data
    }
  end

  @doc "Events of every type, for round trips."
  def generate_test_events(n, pid \\ self()) do
    types = Event.types()

    for i <- 1..n do
      %Event{
        type: Enum.at(types, rem(i, length(types))),
        pid: pid,
        module: __MODULE__,
        function: :"f#{rem(i, 3)}",
        arity: rem(i, 4),
        data: {:payload, i},
        peer: if(rem(i, 2) == 0, do: self(), else: nil)
      }
    end
  end

  @doc """
  Polls `fun` every 10 ms until it is truthy, at most `tries` times, then
  fails the test.
  """
  def eventually(fun, tries \\ 300) do
    cond do
      fun.() -> :ok
      tries == 0 -> ExUnit.Assertions.flunk("condition not reached")
      true -> Process.sleep(10) && eventually(fun, tries - 1)
    end
  end

  @doc """
  A cluster exchange's send batch (see
  `elixir_scope_core::cross_node::wire::SendBatch`): a count, one sender
  key, no destinations, then per send the id's zigzag difference, the
  sender's index, 0 (to the node) and the fingerprint; `whole` sends of
  the `count` are there, and a byte more when fewer.
  """
  def send_batch(count, whole) do
    send = <<4, 0, 0, 7, 0, 0, 0>>

    <<count, 1, 0::64, 0>> <>
      :binary.copy(send, whole) <> if(whole < count, do: <<4>>, else: <<>>)
  end

  @doc "Starts a pipeline with a store of its own; stopped when the test ends."
  def private_pipeline(config \\ []) do
    {:ok, pid} = PipelineManager.start_link(store: :private, config: config)
    ExUnit.Callbacks.on_exit(fn -> if Process.alive?(pid), do: GenServer.stop(pid) end)
    Process.unlink(pid)
    pid
  end
end
