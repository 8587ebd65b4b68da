defmodule ElixirScope.Layer2IntegrationTest do
  # The guide's §7.2 test, with flush/0 in place of the sleep.
  use ExUnit.Case

  alias ElixirScope.Capture.{PipelineManager, RingBuffer}
  alias ElixirScope.Storage.DataAccess
  import ElixirScope.TestEvents

  @tag :integration
  test "full pipeline flow" do
    # Setup
    {:ok, buffer} = RingBuffer.new(size: 1024)
    {:ok, pipeline} = PipelineManager.start_link(buffers: [buffer])
    on_exit(fn -> if Process.alive?(pipeline), do: GenServer.stop(pipeline) end)

    # Generate test events
    events = generate_test_events(100)
    Enum.each(events, &RingBuffer.write(buffer, &1))

    # Wait for processing
    :ok = ElixirScope.flush()

    # Verify
    stored_events = DataAccess.query_recent(100)
    assert length(stored_events) == 100
    assert Enum.all?(stored_events, &has_correlation?/1)

    # They are exactly ours, with their fields intact.
    assert Enum.map(stored_events, & &1.event.data) |> Enum.sort() ==
             Enum.map(events, & &1.data) |> Enum.sort()

    assert RingBuffer.stats(buffer).available == 0
  end

  # Correlation fields are filled by the correlation engine; here each
  # stored event must be a CorrelatedEvent carrying its event and an id.
  defp has_correlation?(%ElixirScope.CorrelatedEvent{
         event: %ElixirScope.Event{id: id},
         links: links
       })
       when is_integer(id) and is_list(links),
       do: true

  defp has_correlation?(_), do: false
end
