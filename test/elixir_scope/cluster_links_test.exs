defmodule ElixirScope.Cluster.LinksTest do
  use ExUnit.Case, async: true

  alias ElixirScope.Cluster.Links

  # Stand-in pids (matching compares them, never asks their node).
  defp pids(n), do: for(_ <- 1..n, do: spawn(fn -> :ok end))

  test "identical messages from two nodes to one receiver each find their own node's send" do
    [s1, s2, r] = pids(3)

    halves = %{
      a@h: {[{10, s1, r, 7}], []},
      b@h: {[{20, s2, r, 7}], []},
      c@h: {[], [{1, r, :b@h, 7, nil}, {2, r, :a@h, 7, nil}]}
    }

    assert {links, %{linked: 2, unlinked: 0}} = Links.match(halves)

    assert Enum.sort(links[:c@h]) == [
             {1, :receives, :b@h, 20, 1.0},
             {2, :receives, :a@h, 10, 1.0}
           ]

    assert links[:a@h] == [{10, :received_by, :c@h, 2, nil}]
    assert links[:b@h] == [{20, :received_by, :c@h, 1, nil}]
  end

  test "one sender's identical messages pair in order and for certain; two senders' are ambiguous" do
    [s1, s2, r] = pids(3)

    one = %{
      a@h: {[{10, s1, r, 7}, {11, s1, r, 7}], []},
      c@h: {[], [{1, r, :a@h, 7, nil}, {2, r, :a@h, 7, nil}]}
    }

    {links, _} = Links.match(one)

    assert Enum.sort(links[:c@h]) == [
             {1, :receives, :a@h, 10, 1.0},
             {2, :receives, :a@h, 11, 1.0}
           ]

    two = %{a@h: {[{10, s1, r, 7}, {11, s2, r, 7}], []}, c@h: {[], [{1, r, :a@h, 7, nil}]}}
    assert {%{c@h: [{1, :receives, :a@h, 10, 0.5}]}, %{linked: 1}} = Links.match(two)

    # A receive that knows its sender's pid takes that sender's send.
    known = %{a@h: {[{10, s1, r, 7}, {11, s2, r, 7}], []}, c@h: {[], [{1, r, s2, 7, nil}]}}
    assert {%{c@h: [{1, :receives, :a@h, 11, 1.0}]}, _} = Links.match(known)
  end

  test "sends to a registered name or a process alias find the receive by name or node" do
    [s, r] = pids(2)

    halves = %{
      a@h: {[{10, s, {:name, :ledger, :c@h}, 1}, {11, s, {:node, :c@h}, 2}], []},
      c@h: {[], [{1, r, :a@h, 1, :ledger}, {2, r, :a@h, 2, nil}, {3, r, :a@h, 3, nil}]}
    }

    assert {links, %{linked: 2, unlinked: 1}} = Links.match(halves)

    assert Enum.sort(links[:c@h]) == [
             {1, :receives, :a@h, 10, 1.0},
             {2, :receives, :a@h, 11, 1.0}
           ]
  end

  test "destination and remote_sender keep only what crossed nodes" do
    [local] = pids(1)
    assert Links.destination(local) == nil
    assert Links.destination({:ledger, :c@h}) == {:name, :ledger, :c@h}
    assert Links.destination({:ledger, node()}) == nil
    assert Links.destination(make_ref()) == nil
    assert Links.destination(:ledger) == nil
    assert Links.remote_sender(:a@h) == :a@h
    assert Links.remote_sender(node()) == nil
    assert Links.remote_sender(local) == nil
    assert Links.remote_sender(nil) == nil
  end

  test "the native compact form is Local.compact/1 of the struct, and expands back" do
    alias ElixirScope.Cluster.Local
    import ElixirScope.TestEvents

    p = private_pipeline()
    {:ok, _} = ElixirScope.ingest_batch(generate_test_events(40), pipeline: p)
    :ok = ElixirScope.flush(5_000, pipeline: p)
    structs = ElixirScope.Query.select([], pipeline: p)
    assert length(structs) == 40
    assert Enum.any?(structs, &(&1.links != []))

    compact = ElixirScope.Query.compact_stream([], pipeline: p) |> Enum.to_list()
    assert compact == Enum.map(structs, &Local.compact/1)
    assert Enum.map(compact, &Local.expand(&1, 0)) == structs

    assert Local.select([type: :function_call], [pipeline: p], true) ==
             Enum.map(
               ElixirScope.Query.select([type: :function_call], pipeline: p),
               &Local.compact/1
             )
  end
end
