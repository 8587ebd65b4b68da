defmodule ElixirScope.SavedTraceTest do
  use ExUnit.Case

  alias ElixirScope.{EventCorrelator, Export, Query, Traced}
  alias ElixirScope.Storage.DataAccess
  import ElixirScope.TestEvents

  defp tmp_path do
    path = Path.join(System.tmp_dir!(), "es_trace_#{System.unique_integer([:positive])}.estrace")
    on_exit(fn -> File.rm(path) end)
    path
  end

  # The events `opts` addresses, oldest first.
  defp all(opts), do: Query.select([], opts)

  test "a saved trace loads back with the same events, links, statistics and exports" do
    {p, _server, client} = Traced.bank_with_fib()
    original = [pipeline: p]
    path = tmp_path()

    assert {:ok, %{events: n, bytes: bytes}} = ElixirScope.save(path, [], original)
    assert n == length(all(original)) and n > 20
    assert bytes == File.stat!(path).size

    assert {:ok, store} = ElixirScope.load(path)
    loaded = [store: store]
    assert %ElixirScope.Store{events: ^n, lost: 0} = store
    assert store.node == Atom.to_string(node())
    assert inspect(store) =~ "#{n} events from #{node()}"

    assert all(loaded) == all(original)
    assert Query.call_stat(:mfa, loaded) == Query.call_stat(:mfa, original)

    assert Query.tracebacks([type: :function_call], loaded) ==
             Query.tracebacks([type: :function_call], original)

    assert Query.top_call_trees(loaded) == Query.top_call_trees(original)
    assert Export.folded_stacks([], loaded) == Export.folded_stacks([], original)
    assert Export.mermaid_sequence([], loaded) == Export.mermaid_sequence([], original)
    assert DataAccess.query_by_pid(client, loaded) == DataAccess.query_by_pid(client, original)
    assert EventCorrelator.process_tree(loaded) == EventCorrelator.process_tree(original)

    # Events written into the loaded store are numbered after the saved ones.
    [last] = Query.select([limit: 1], [order: :desc] ++ loaded)
    :ok = DataAccess.write_batch([call()], loaded)
    [added] = Query.select([limit: 1], [order: :desc] ++ loaded)
    assert added.event.id > last.event.id and added.event.module == ElixirScope.TestEvents
  end

  test "a filter saves only what it selects; the process tree and pids come back" do
    p = private_pipeline()
    opts = [pipeline: p]
    child = spawn(fn -> Process.sleep(:infinity) end)
    on_exit(fn -> Process.exit(child, :kill) end)

    spawn_event = %ElixirScope.Event{type: :process_spawn, pid: self(), peer: child}
    {:ok, _} = ElixirScope.ingest_batch([spawn_event | generate_test_events(30)], opts)
    :ok = ElixirScope.flush(5_000, opts)
    tree = EventCorrelator.process_tree(opts)
    assert child in tree[self()]

    path = tmp_path()
    filter = [type: :function_call]
    {:ok, %{events: saved}} = ElixirScope.save(path, filter, opts)
    assert saved == length(Query.select(filter, opts)) and saved > 0

    {:ok, store} = ElixirScope.load(path)
    assert Query.select([], store: store) == Query.select(filter, opts)
    assert EventCorrelator.process_tree(store: store) == tree

    # max_events bounds the loaded store like any other.
    {:ok, small} = ElixirScope.load(path, max_events: 2)
    assert length(Query.select([], store: small)) == 2
  end

  # 25,000 events: three event frames of at most 10,000.
  defp big_file do
    p = private_pipeline()
    opts = [pipeline: p]

    for _ <- 1..5,
        do: {:ok, _} = ElixirScope.ingest_batch(generate_test_events(5_000), opts)

    :ok = ElixirScope.flush(10_000, opts)
    path = tmp_path()
    {:ok, %{events: 25_000}} = ElixirScope.save(path, [], opts)
    path
  end

  defp damage(path, at, fun) do
    bin = File.read!(path)
    <<head::binary-size(at), byte, rest::binary>> = bin
    File.write!(path, <<head::binary, fun.(byte), rest::binary>>)
  end

  test "a damaged file is refused with where and why; partial: true loads the intact frames" do
    path = big_file()
    size = File.stat!(path).size
    intact = File.read!(path)

    # A flipped bit in the middle: one frame's checksum fails.
    damage(path, div(size, 2), &Bitwise.bxor(&1, 0x10))
    assert {:error, {:corrupt, offset, "checksum mismatch"}} = ElixirScope.load(path)
    assert offset > 0 and offset < div(size, 2)

    {:ok, store} = ElixirScope.load(path, partial: true)
    assert store.lost > 0 and store.lost <= 10_000
    assert store.events + store.lost == 25_000
    assert length(Query.select([], store: store)) == store.events

    # Cut short: the last frame is incomplete.
    File.write!(path, binary_part(intact, 0, size - 100))
    assert {:error, {:corrupt, _, "truncated frame"}} = ElixirScope.load(path)
    {:ok, cut} = ElixirScope.load(path, partial: true)
    assert cut.lost > 0 and cut.events + cut.lost == 25_000
  end

  test "files flipped and cut anywhere load or are refused, never crash" do
    p = private_pipeline()
    {:ok, _} = ElixirScope.ingest_batch(generate_test_events(300), pipeline: p)
    :ok = ElixirScope.flush(5_000, pipeline: p)
    path = tmp_path()
    {:ok, _} = ElixirScope.save(path, [], pipeline: p)
    intact = File.read!(path)
    size = byte_size(intact)

    for at <- Enum.take_random(0..(size - 1), 150), mask <- [0x01, 0xFF] do
      <<head::binary-size(at), byte, rest::binary>> = intact
      File.write!(path, <<head::binary, Bitwise.bxor(byte, mask), rest::binary>>)
      assert_loads_or_refuses(path)
    end

    for cut <- Enum.take_random(0..(size - 1), 50) do
      File.write!(path, binary_part(intact, 0, cut))
      assert_loads_or_refuses(path)
    end
  end

  defp assert_loads_or_refuses(path) do
    for partial <- [false, true] do
      case ElixirScope.load(path, partial: partial) do
        {:ok, store} ->
          assert store.events + store.lost <= 301
          assert length(Query.select([], store: store)) == store.events

        {:error, reason} ->
          assert match?({:corrupt, _, _}, reason) or match?({:unsupported_version, _}, reason)
      end
    end
  end

  test "other files, newer versions and bad arguments give readable errors" do
    path = tmp_path()
    File.write!(path, "not a trace at all")
    assert {:error, {:corrupt, 0, "not an elixir_scope trace file"}} = ElixirScope.load(path)

    assert {:error, {:file, message}} = ElixirScope.load(path <> ".missing")
    assert message =~ "No such file"

    p = private_pipeline()
    {:ok, _} = ElixirScope.ingest_batch(generate_test_events(3), pipeline: p)
    :ok = ElixirScope.flush(5_000, pipeline: p)
    {:ok, _} = ElixirScope.save(path, [], pipeline: p)
    # The version is the little-endian u16 after the 8-byte magic.
    damage(path, 8, fn _ -> 99 end)
    assert ElixirScope.load(path) == {:error, {:unsupported_version, 99}}

    assert {:error, {:file, _}} = ElixirScope.save("/nonexistent/dir/t.estrace", [], pipeline: p)
    assert_raise ArgumentError, ~r/max_events/, fn -> ElixirScope.load(path, max_events: 0) end
    assert_raise ArgumentError, ~r/partial/, fn -> ElixirScope.load(path, partial: :yes) end

    assert_raise ArgumentError, ~r/unknown filter :bogus/, fn ->
      ElixirScope.save(path, bogus: 1)
    end

    assert_raise ArgumentError, ~r/unknown option :bogus/, fn ->
      ElixirScope.save(path, [], bogus: 1)
    end

    assert_raise ArgumentError, ~r/store:/, fn -> Query.select([], store: :nope) end
  end

  test "a trace saved in another VM loads here: its new atoms made, its pids this node's" do
    name = "es_saved_elsewhere_#{System.unique_integer([:positive])}_ü日本"
    assert_raise ArgumentError, fn -> String.to_existing_atom(name) end
    path = tmp_path()

    paths = Enum.flat_map(:code.get_path(), &[~c"-pa", &1])
    {:ok, peer, _} = :peer.start_link(%{connection: :standard_io, args: paths})
    {:ok, _} = :peer.call(peer, Application, :ensure_all_started, [:elixir_scope])
    assert {:ok, %{events: 1}} = :peer.call(peer, Traced, :save_with_atom, [path, name])
    :peer.stop(peer)

    {:ok, store} = ElixirScope.load(path)
    atom = String.to_existing_atom(name)
    assert [e] = Query.select([], store: store)
    assert %{module: ^atom, function: :run, data: {^atom, pid}} = e.event
    assert e.event.pid == pid and node(pid) == node()
  end
end
