defmodule ElixirScope.EventCorrelatorTest do
  use ExUnit.Case

  alias ElixirScope.{CorrelatedEvent, Event, EventCorrelator}
  alias ElixirScope.Storage.DataAccess
  import ElixirScope.TestEvents

  defp create_function_entry_event,
    do: %Event{
      type: :function_call,
      pid: self(),
      module: Calc,
      function: :add,
      arity: 2,
      data: [1, 2]
    }

  defp create_function_exit_event,
    do: %Event{
      type: :function_return,
      pid: self(),
      module: Calc,
      function: :add,
      arity: 2,
      data: 3
    }

  # Guide §7.1, as written.
  describe "function correlation" do
    test "correlates function entry and exit" do
      entry_event = create_function_entry_event()
      exit_event = create_function_exit_event()

      correlated_entry = EventCorrelator.correlate_event(entry_event)
      correlated_exit = EventCorrelator.correlate_event(exit_event)

      assert correlated_entry.correlation_id == correlated_exit.correlation_id
      assert {:completes, correlated_entry.event.id} in correlated_exit.links
    end
  end

  defp ev(type, pid, fields), do: struct!(%Event{type: type, pid: pid}, fields)

  defp store_all(events, p) do
    {:ok, _} = ElixirScope.ingest_batch(events, pipeline: p)
    :ok = ElixirScope.flush(5_000, pipeline: p)
    DataAccess.query_recent(10_000, pipeline: p) |> Enum.reverse()
  end

  test "a request across processes chains back from the state change to the caller" do
    p = private_pipeline(pipeline: [min_workers: 2, target_workers: 2])
    client = spawn(fn -> :ok end)
    server = spawn(fn -> :ok end)
    msg = {:"$gen_call", {client, :tag}, :bump}

    # The server's events first: its shard may well be drained first.
    server_events = [
      ev(:message_receive, server, data: msg),
      ev(:function_call, server,
        module: Counter,
        function: :handle_call,
        arity: 3,
        data: [:bump, :from, 1]
      ),
      ev(:state_change, server, data: %{old: 1, new: 2}),
      ev(:function_return, server,
        module: Counter,
        function: :handle_call,
        arity: 3,
        data: {:reply, 2, 2}
      )
    ]

    client_events = [
      ev(:function_call, client, module: Client, function: :bump, arity: 0, data: []),
      ev(:message_send, client, data: msg, peer: server)
    ]

    stored = store_all(server_events ++ client_events, p)
    by = fn type, pid -> Enum.find(stored, &(&1.event.type == type and &1.event.pid == pid)) end

    recv = by.(:message_receive, server)
    send = by.(:message_send, client)
    handle = by.(:function_call, server)
    change = by.(:state_change, server)
    caller = by.(:function_call, client)

    assert {:receives, send.event.id} in recv.links
    assert recv.correlation_id == send.event.id
    assert recv.correlation_confidence == 1.0
    assert {:caused_by, recv.event.id} in handle.links
    assert {:caused_by, recv.event.id} in change.links
    assert change.parent_id == handle.event.id
    assert send.parent_id == caller.event.id

    chain = EventCorrelator.get_correlation_chain(change.event.id, pipeline: p)

    assert Enum.map(chain, & &1.event.id) ==
             [caller.event.id, send.event.id, recv.event.id, change.event.id]

    pair = DataAccess.query_by_correlation(send.event.id, pipeline: p)

    assert Enum.map(pair, & &1.event.type) == [:message_receive, :message_send] or
             Enum.map(pair, & &1.event.type) == [:message_send, :message_receive]

    m = EventCorrelator.metrics(pipeline: p)
    assert m.linked == m.linkable and m.success_rate == 1.0
  end

  test "spawns form a process tree and link the child's first call" do
    p = private_pipeline()
    parent = self()
    child = spawn(fn -> :ok end)

    stored =
      store_all(
        [
          ev(:function_call, child, module: W, function: :init, arity: 0, data: []),
          ev(:process_spawn, parent, data: {W, :init, []}, peer: child)
        ],
        p
      )

    [first_call, spawn_ev] = Enum.sort_by(stored, &(&1.event.type != :function_call))
    assert {:spawned_by, spawn_ev.event.id} in first_call.links
    assert EventCorrelator.process_tree(pipeline: p) == %{parent => [child]}
  end

  test "identical messages from two senders are matched with confidence below 1" do
    p = private_pipeline()
    [a, b, r] = for _ <- 1..3, do: spawn(fn -> :ok end)

    stored =
      store_all(
        [
          ev(:message_send, a, data: :ping, peer: r),
          ev(:message_send, b, data: :ping, peer: r),
          ev(:message_receive, r, data: :ping),
          ev(:message_receive, r, data: :ping)
        ],
        p
      )

    receives = Enum.filter(stored, &(&1.event.type == :message_receive))
    assert length(receives) == 2
    assert Enum.all?(receives, &(&1.correlation_confidence < 1.0))
    assert EventCorrelator.metrics(pipeline: p).ambiguous_matches >= 1
  end

  test "establish_link, cleanup and bad input" do
    p = private_pipeline()
    [a, b] = store_all([call(self(), [1]), call(self(), [2])], p)
    assert EventCorrelator.establish_link(a.event.id, b.event.id, :caused_by, pipeline: p) == :ok
    {:ok, linked} = DataAccess.get_event(a.event.id, pipeline: p)
    assert {:caused_by, b.event.id} in linked.links

    assert EventCorrelator.establish_link(a.event.id, b.event.id, :bogus, pipeline: p) ==
             {:error, :invalid_link_type}

    assert EventCorrelator.establish_link(999_999, 1, :caused_by, pipeline: p) ==
             {:error, :not_found}

    assert {:ok, n} = EventCorrelator.cleanup_expired_correlations(pipeline: p)
    assert is_integer(n)
    assert_raise ArgumentError, fn -> EventCorrelator.get_correlation_chain(:x) end
    assert_raise ArgumentError, fn -> EventCorrelator.correlate_event(:not_an_event) end
    assert_raise ArgumentError, fn -> EventCorrelator.establish_link(0, 1, :caused_by) end
    assert EventCorrelator.get_correlation_chain(999_999_999, pipeline: p) == []
  end

  test "stored events all carry a correlation type" do
    p = private_pipeline()
    stored = store_all(generate_test_events(50), p)
    assert length(stored) == 50

    assert Enum.all?(
             stored,
             &match?(%CorrelatedEvent{correlation_type: t} when is_atom(t) and t != nil, &1)
           )
  end
end
