defmodule ElixirScope.IngestTest do
  use ExUnit.Case, async: true

  import Bitwise
  alias ElixirScope.Event
  alias ElixirScope.Storage.DataAccess
  import ElixirScope.TestEvents

  setup do
    pipeline = private_pipeline(capture: [max_payload_bytes: 1024])
    {:ok, p: pipeline, opts: [pipeline: pipeline]}
  end

  defp stored(id, opts) do
    {:ok, %{event: event}} = DataAccess.get_event(id, opts)
    event
  end

  test "an ingested event is stored with every field intact", %{opts: opts} do
    ts = System.monotonic_time(:nanosecond)

    event = %Event{
      type: :message_send,
      pid: self(),
      timestamp: ts,
      wall_time: 123,
      module: Kernel,
      function: :send,
      arity: 2,
      data: {:hello, [1, 2.5, "bin", <<1::3>>, 1 <<< 80, -7, %{a: 1}, [:x | :improper]]},
      peer: {:registered_name, :node@host}
    }

    {:ok, id} = ElixirScope.ingest(event, opts)
    assert :ok = ElixirScope.flush(5_000, opts)
    assert stored(id, opts) == %{event | id: id}
  end

  test "refs, funs, ports and remote-looking terms survive the round trip", %{opts: opts} do
    fun = fn x -> x end
    data = [make_ref(), fun, hd(Port.list()), self(), [], {}, %{}, <<>>, :"with space"]
    {:ok, id} = ElixirScope.ingest(call(self(), data), opts)
    :ok = ElixirScope.flush(5_000, opts)
    assert stored(id, opts).data == data
  end

  test "terms are read in place on this VM, and odd shapes still decode", %{opts: opts} do
    # OTP 25 on 64-bit: the load-time layout check enables direct reads.
    assert %{term_reads: :direct, struct_builds: :shared_keys} =
             ElixirScope.Debug.Layer2.get_pipeline_state(opts)

    big = Map.new(1..40, &{&1, {&1, self()}})
    ts = -(1 <<< 62)
    wall = 1 <<< 61

    # An %Event{} with an extra key, and one merged into a map of more than
    # 32 keys (a hash map), are not read by position but by key.
    extra = Map.put(call(self(), big), :extra, 1)
    huge = Map.merge(big, %{call(self(), [:x | :y]) | timestamp: ts, wall_time: wall})

    {:ok, a} = ElixirScope.ingest(extra, opts)
    {:ok, b} = ElixirScope.ingest(huge, opts)

    {:ok, 1} =
      ElixirScope.ingest_batch([{:custom, self(), nil, nil, nil, {1, [2, {3}]}, self()}], opts)

    :ok = ElixirScope.flush(5_000, opts)

    assert stored(a, opts).data == big
    assert %{data: [:x | :y], timestamp: ^ts, wall_time: ^wall} = stored(b, opts)

    [custom] = DataAccess.query_recent(1, opts) |> Enum.map(& &1.event)
    assert %{type: :custom, data: {1, [2, {3}]}, arity: nil, module: nil} = custom
    assert custom.peer == self()
  end

  test "missing timestamps are stamped at ingest", %{opts: opts} do
    before = System.monotonic_time(:nanosecond)
    {:ok, id} = ElixirScope.ingest(call(), opts)
    :ok = ElixirScope.flush(5_000, opts)
    e = stored(id, opts)
    assert e.timestamp >= before and e.timestamp <= System.monotonic_time(:nanosecond)
    assert abs(e.wall_time - System.os_time(:nanosecond)) < 5_000_000_000
  end

  test "the compact tuple form is accepted", %{opts: opts} do
    {:ok, 2} =
      ElixirScope.ingest_batch(
        [
          {:function_call, self(), Enum, :map, 2, [[1], :f], nil},
          {:message_receive, self(), nil, nil, nil, :ping, nil}
        ],
        opts
      )

    :ok = ElixirScope.flush(5_000, opts)
    [recv, call] = DataAccess.query_recent(2, opts) |> Enum.map(& &1.event)

    assert %Event{
             type: :function_call,
             module: Enum,
             function: :map,
             arity: 2,
             data: [[1], :f],
             peer: nil
           } = call

    assert %Event{type: :message_receive, module: nil, function: nil, arity: nil, data: :ping} =
             recv
  end

  test "ids are positive, unique and increasing in ingest order", %{opts: opts} do
    ids = for i <- 1..50, do: elem(ElixirScope.ingest(call(self(), [i]), opts), 1)
    assert ids == Enum.sort(ids) and length(Enum.uniq(ids)) == 50 and hd(ids) > 0
  end

  test "large payloads are truncated with their size", %{opts: opts} do
    big = :binary.copy("x", 10_000)
    {:ok, id} = ElixirScope.ingest(call(self(), big), opts)
    :ok = ElixirScope.flush(5_000, opts)
    assert {:truncated, size, hint} = stored(id, opts).data
    assert size > 10_000 and hint =~ "binary"
  end

  test "flat payloads (encoded in one pass when they fit inline) round trip", %{opts: opts} do
    big = (1 <<< 59) - 1

    terms = [
      [],
      -1,
      big,
      -big - 1,
      :"an atom",
      self(),
      [1, :ok],
      [1, 2 | :tail],
      [-5 | self()],
      {},
      {1, :a, self()},
      {big, big},
      [big, big, big],
      Enum.to_list(1..20),
      Enum.to_list(1..64),
      Enum.to_list(1..65),
      List.to_tuple(Enum.to_list(1..64)),
      List.to_tuple(Enum.to_list(1..65))
    ]

    {:ok, n} = ElixirScope.ingest_batch(Enum.map(terms, &call(self(), &1)), opts)
    assert n == length(terms)
    :ok = ElixirScope.flush(5_000, opts)
    stored = DataAccess.query_recent(n, opts) |> Enum.map(& &1.event.data) |> Enum.reverse()
    assert stored == terms
  end

  test "payload bounds: deep and long terms are cut, mid-size ones kept whole", %{opts: opts} do
    deep = Enum.reduce(1..300, :leaf, &{&1, &2})
    long = Enum.to_list(1..1_100_000)
    # Past the inline size but within max_payload_bytes, with compound
    # elements between runs of immediates and an improper tail.
    mid = [1, :a, {2, [3 | 4]}, "bin", %{k: [5, 6]}, self() | :tail]

    ids =
      for data <- [deep, long, mid] do
        {:ok, id} = ElixirScope.ingest(call(self(), data), opts)
        id
      end

    :ok = ElixirScope.flush(5_000, opts)
    [d, l, m] = Enum.map(ids, &stored(&1, opts).data)
    assert {:truncated, _, hint} = d
    assert hint =~ "nested deeper than 256 levels"
    assert {:truncated, size, hint} = l
    assert size > 1024 and hint =~ "list"
    assert m == mid
  end

  test "bad input gives clear errors and the counters add up", %{opts: opts} do
    assert ElixirScope.ingest(:nope, opts) == {:error, {:invalid_event, :not_an_event}}

    assert ElixirScope.ingest(%{call() | pid: :self}, opts) ==
             {:error, {:invalid_event, {:pid, :not_a_local_pid}}}

    assert ElixirScope.ingest(%{call() | type: :nope}, opts) ==
             {:error, {:invalid_event, {:type, :unknown_event_type}}}

    assert ElixirScope.ingest(%{call() | module: "M"}, opts) ==
             {:error, {:invalid_event, {:module, :not_an_atom}}}

    assert ElixirScope.ingest(%{call() | arity: 300}, opts) ==
             {:error, {:invalid_event, {:arity, :not_an_arity}}}

    assert ElixirScope.ingest(%{call() | timestamp: 1.5}, opts) ==
             {:error, {:invalid_event, {:timestamp, :not_an_integer}}}

    assert ElixirScope.ingest({:function_call, self()}, opts) ==
             {:error, {:invalid_event, :not_an_event}}

    assert ElixirScope.ingest(%{__struct__: Other, type: :custom}, opts) ==
             {:error, {:invalid_event, :not_an_event}}

    assert ElixirScope.ingest_batch(:nope, opts) == {:error, :not_a_list}
    assert ElixirScope.ingest_batch([call() | call()], opts) == {:error, :not_a_list}

    assert {:error, {:invalid_events, 2, [{1, :not_an_event}, {3, {:pid, :not_a_local_pid}}]}} =
             ElixirScope.ingest_batch([call(), 42, call(), %{call() | pid: nil}], opts)

    :ok = ElixirScope.flush(5_000, opts)
    s = ElixirScope.stats(opts)
    assert s.dropped.invalid == 10
    assert s.stored == 2
    assert s.ingested == s.stored + s.dropped_total + s.queued
  end

  test "a flood into tiny rings drops, counts, and keeps the VM up" do
    opts = [
      pipeline:
        private_pipeline(
          capture: [ring_size: 16, shards: 1],
          pipeline: [min_workers: 1, target_workers: 1],
          processing: [flush_interval_ms: 50]
        )
    ]

    results = for i <- 1..5_000, do: ElixirScope.ingest(call(self(), [i]), opts)
    :ok = ElixirScope.flush(5_000, opts)
    s = ElixirScope.stats(opts)
    rejected = Enum.count(results, &(&1 == {:error, :buffer_full}))
    assert s.dropped.buffer_full == rejected
    assert s.ingested == 5_000
    assert s.ingested == s.stored + s.dropped_total + s.queued
    assert s.queued == 0
  end
end
