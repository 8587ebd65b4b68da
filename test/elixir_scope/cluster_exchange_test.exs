defmodule ElixirScope.Cluster.ExchangeTest do
  use ExUnit.Case, async: true

  alias ElixirScope.Native
  alias ElixirScope.Storage.DataAccess
  import ElixirScope.TestEvents, only: [send_batch: 2]

  test "a malformed send batch is refused; the batches before it stay and its sends are counted" do
    p = ElixirScope.TestEvents.private_pipeline()
    store = DataAccess.store(pipeline: p)
    dropped = fn -> ElixirScope.EventCorrelator.metrics(pipeline: p).cross_node.dropped end
    waiting = fn -> ElixirScope.EventCorrelator.metrics(pipeline: p).cross_node.waiting_sends end

    assert {[], 0, 0} = Native.cross_node_link(store, [{:b@h, send_batch(3, 3)}], [], 0)
    assert waiting.() == 3
    assert ElixirScope.EventCorrelator.metrics(pipeline: p).cross_node.busy_ns > 0

    assert_raise ArgumentError, fn ->
      Native.cross_node_link(store, [{:c@h, send_batch(2, 2)}, {:d@h, send_batch(5, 2)}], [], 0)
    end

    assert dropped.() == 2, "d's two sends read before the bytes went wrong"
    assert waiting.() == 5, "b's three, c's two"
  end
end
