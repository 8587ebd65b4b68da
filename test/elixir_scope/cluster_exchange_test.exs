defmodule ElixirScope.Cluster.ExchangeTest do
  use ExUnit.Case, async: true

  alias ElixirScope.Native
  alias ElixirScope.Storage.DataAccess

  # A send batch (see `elixir_scope_core::cross_node::wire::SendBatch`):
  # a count, one sender key, no destinations, then per send the id's
  # zigzag difference, the sender's index, 0 (to the node) and the
  # fingerprint; `whole` sends of the `count` are there, and a byte more.
  defp batch(count, whole) do
    send = <<4, 0, 0, 7, 0, 0, 0>>

    <<count, 1, 0::64, 0>> <>
      :binary.copy(send, whole) <> if(whole < count, do: <<4>>, else: <<>>)
  end

  test "a malformed send batch is refused; the batches before it stay and its sends are counted" do
    p = ElixirScope.TestEvents.private_pipeline()
    store = DataAccess.store(pipeline: p)
    dropped = fn -> ElixirScope.EventCorrelator.metrics(pipeline: p).cross_node.dropped end
    waiting = fn -> ElixirScope.EventCorrelator.metrics(pipeline: p).cross_node.waiting_sends end

    assert {[], 0, 0} = Native.cross_node_link(store, [{:b@h, batch(3, 3)}], [], 0)
    assert waiting.() == 3

    assert_raise ArgumentError, fn ->
      Native.cross_node_link(store, [{:c@h, batch(2, 2)}, {:d@h, batch(5, 2)}], [], 0)
    end

    assert dropped.() == 2, "d's two sends read before the bytes went wrong"
    assert waiting.() == 5, "b's three, c's two"
  end
end
