defmodule ElixirScope.Cluster.CompactTest do
  use ExUnit.Case, async: true

  test "the native compact form is Local.compact/1 of the struct, and expands back natively" do
    alias ElixirScope.Cluster.Local
    import ElixirScope.TestEvents

    p = private_pipeline()
    {:ok, _} = ElixirScope.ingest_batch(generate_test_events(40), pipeline: p)
    :ok = ElixirScope.flush(5_000, pipeline: p)
    structs = ElixirScope.Query.select([], pipeline: p)
    assert length(structs) == 40
    assert Enum.any?(structs, &(&1.links != []))

    compact = ElixirScope.Query.compact_chunks([], pipeline: p) |> Enum.concat()
    chunks = ElixirScope.Query.compact_chunks([], pipeline: p, chunk_size: 15) |> Enum.to_list()
    assert Enum.map(chunks, &length/1) == [15, 15, 10] and Enum.concat(chunks) == compact
    assert compact == Enum.map(structs, &Local.compact/1)
    expanded = ElixirScope.Native.expand_compact(compact, :a@h, 0)
    assert expanded == Enum.map(structs, &{:a@h, &1})

    # Moved onto another clock, and refused when not a compact event.
    [{:a@h, first} | _] = ElixirScope.Native.expand_compact(compact, :a@h, 1_000)
    assert first.event.timestamp == hd(structs).event.timestamp - 1_000
    assert_raise ArgumentError, fn -> ElixirScope.Native.expand_compact([{1, 2}], :a@h, 0) end
    assert_raise ArgumentError, fn -> ElixirScope.Native.expand_compact([:x], :a@h, 0) end

    # What a node streams to a cluster query: the compact form of what it
    # selects, in chunks (a match: filter runs in Elixir, in one chunk).
    calls = ElixirScope.Query.select([type: :function_call], pipeline: p)
    streamed = streamed([type: :function_call], pipeline: p, chunk_size: 7)
    assert Enum.concat(streamed) == Enum.map(calls, &Local.compact/1)
    assert length(streamed) == ceil(length(calls) / 7)
    odd = &(rem(&1.event.id, 2) == 1)
    matched = ElixirScope.Query.select([match: odd], pipeline: p)
    assert streamed([match: odd], pipeline: p) == [Enum.map(matched, &Local.compact/1)]
  end

  defp streamed(filter, opts) do
    ref = make_ref()
    ElixirScope.Cluster.Local.stream_select(self(), ref, filter, opts)
    receive_chunks(ref, [])
  end

  defp receive_chunks(ref, chunks) do
    receive do
      {^ref, {:chunk, tuples}} -> receive_chunks(ref, [tuples | chunks])
      {^ref, :done} -> Enum.reverse(chunks)
    after
      1_000 -> flunk("no :done")
    end
  end
end
