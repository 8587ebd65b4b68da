defmodule ElixirScope.Capture.RingBufferTest do
  use ExUnit.Case, async: true

  import Bitwise
  alias ElixirScope.Capture.RingBuffer
  import ElixirScope.TestEvents

  test "rejects bad sizes and strategies" do
    assert RingBuffer.new(size: 1000) == {:error, :size_must_be_power_of_2}
    assert RingBuffer.new(size: 0) == {:error, :invalid_size}
    assert RingBuffer.new(size: -4) == {:error, :invalid_size}
    assert RingBuffer.new(size: "8") == {:error, :invalid_size}
    assert RingBuffer.new(size: 1 <<< 40) == {:error, :invalid_size}

    assert RingBuffer.new(size: 8, overflow_strategy: :sample) ==
             {:error, :invalid_overflow_strategy}
  end

  test "writes and reads back in order with positions" do
    {:ok, ring} = RingBuffer.new(size: 8)
    for i <- 1..5, do: assert(RingBuffer.write(ring, call(self(), [i])) == :ok)

    {events, pos} = RingBuffer.read_batch(ring, 0, 3)
    assert Enum.map(events, & &1.data) == [[1], [2], [3]]
    assert pos == 3
    {events, pos} = RingBuffer.read_batch(ring, pos, 10)
    assert Enum.map(events, & &1.data) == [[4], [5]]
    assert pos == 5
    assert RingBuffer.read_batch(ring, pos, 10) == {[], 5}

    s = RingBuffer.stats(ring)

    assert %{
             size: 8,
             write_position: 5,
             read_position: 5,
             available: 0,
             total_writes: 5,
             total_reads: 5
           } = s

    assert s.dropped_events == 0
  end

  test "drop_newest rejects when full and counts" do
    {:ok, ring} = RingBuffer.new(size: 4, overflow_strategy: :drop_newest)
    results = for i <- 1..6, do: RingBuffer.write(ring, call(self(), [i]))
    assert results == [:ok, :ok, :ok, :ok, {:error, :buffer_full}, {:error, :buffer_full}]
    assert %{dropped_events: 2, available: 4, utilization: 1.0} = RingBuffer.stats(ring)
    {events, _} = RingBuffer.read_batch(ring, 0, 10)
    assert Enum.map(events, & &1.data) == [[1], [2], [3], [4]]
  end

  test "drop_oldest overwrites and the reader sees the gap in positions" do
    {:ok, ring} = RingBuffer.new(size: 4, overflow_strategy: :drop_oldest)
    for i <- 1..6, do: assert(RingBuffer.write(ring, call(self(), [i])) == :ok)
    assert %{dropped_events: 2, available: 4, read_position: 2} = RingBuffer.stats(ring)
    {events, pos} = RingBuffer.read_batch(ring, 0, 10)
    assert Enum.map(events, & &1.data) == [[3], [4], [5], [6]]
    # 6 - 0 - 4 = 2 events missed.
    assert pos == 6
  end

  test "concurrent writers never lose an event without counting it" do
    {:ok, ring} = RingBuffer.new(size: 256, overflow_strategy: :drop_oldest)

    1..8
    |> Enum.map(fn w ->
      Task.async(fn -> for i <- 1..2000, do: RingBuffer.write(ring, call(self(), [w, i])) end)
    end)
    |> Enum.each(&Task.await/1)

    {events, _} = RingBuffer.read_batch(ring, 0, 1000)
    s = RingBuffer.stats(ring)
    assert length(events) + s.dropped_events == 16_000
  end

  test "bad writes and reads" do
    {:ok, ring} = RingBuffer.new(size: 4)
    assert RingBuffer.write(ring, :nope) == {:error, {:invalid_event, :not_an_event}}

    assert RingBuffer.write(ring, %{call() | type: :bogus}) ==
             {:error, {:invalid_event, {:type, :unknown_event_type}}}

    assert_raise ArgumentError, fn -> RingBuffer.read_batch(ring, -1, 1) end
    assert RingBuffer.stats(ring).total_writes == 0
  end

  test "inspects readably" do
    {:ok, ring} = RingBuffer.new(size: 16, overflow_strategy: :drop_oldest)
    RingBuffer.write(ring, call())
    assert inspect(ring) == "#RingBuffer<size: 16, available: 1, dropped: 0, drop_oldest>"
  end
end
