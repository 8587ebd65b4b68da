defmodule ElixirScope.TracerTest do
  use ExUnit.Case

  alias ElixirScope.{EventCorrelator, Traced}
  alias ElixirScope.Storage.DataAccess
  alias ElixirScope.Traced.{Client, Counter}
  import ElixirScope.TestEvents, only: [eventually: 2]

  setup do
    on_exit(fn ->
      if pid = Process.whereis(ElixirScope.Tracer.Server),
        do: ElixirScope.Tracer.Server.stop(pid, :requested)
    end)
  end

  defp events_of(pids) do
    :ok = ElixirScope.flush()

    pids
    |> Enum.flat_map(&DataAccess.query_by_pid(&1, order: :asc))
    |> Enum.sort_by(& &1.event.id)
  end

  defp find(events, fun), do: Enum.find(events, &fun.(&1.event)) || flunk("no such event")

  defp wait_stopped(session) do
    eventually(
      fn ->
        not ElixirScope.trace_info(session).running and not Process.alive?(session.server)
      end,
      200
    )

    ElixirScope.trace_info(session)
  end

  describe "a GenServer.call, traced on both sides" do
    test "links call, send, receive, callback, state change and reply" do
      {:ok, server} = Counter.start(0)
      client = Traced.runner()

      {:ok, session} =
        ElixirScope.trace(pids: [client, server], calls: [Counter, Client], messages: true)

      before = System.monotonic_time(:nanosecond)
      assert Traced.run(client, fn -> Client.bump(server) end) == 1
      after_run = System.monotonic_time(:nanosecond)
      assert {:ok, %{stopped_because: :requested, dropped: 0}} = ElixirScope.stop_trace(session)
      events = events_of([client, server])

      bump = find(events, &(&1.type == :function_call and &1.function == :bump))
      # Stamped at the callback, on the VM's monotonic clock and the OS wall clock.
      assert bump.event.timestamp >= before and bump.event.timestamp <= after_run
      assert abs(bump.event.wall_time - System.os_time(:nanosecond)) < 5_000_000_000

      call_send =
        find(events, fn e ->
          e.type == :message_send and e.pid == client and
            match?({:"$gen_call", _, :bump}, e.data)
        end)

      assert call_send.event.peer == server
      assert call_send.parent_id == bump.event.id

      call_receive =
        find(events, &(&1.type == :message_receive and match?({:"$gen_call", _, _}, &1.data)))

      assert call_receive.event.pid == server
      assert call_receive.event.peer == client, "the receive knows its sender"
      assert call_receive.links == [receives: call_send.event.id]
      assert call_receive.correlation_confidence == 1.0

      handle_call = find(events, &(&1.type == :function_call and &1.function == :handle_call))
      assert {:caused_by, call_receive.event.id} in handle_call.links

      change = find(events, &(&1.type == :state_change))
      assert change.event.data == %{old: 0, new: 1}
      assert change.links == [caused_by: call_receive.event.id]
      assert change.parent_id == handle_call.event.id

      reply_send = find(events, &(&1.type == :message_send and &1.pid == server))

      reply_receive =
        find(
          events,
          &(&1.type == :message_receive and &1.pid == client and
              match?({_, 1}, &1.data))
        )

      assert reply_receive.links == [receives: reply_send.event.id]

      chain = EventCorrelator.get_correlation_chain(change.event.id)
      ids = Enum.map(chain, & &1.event.id)
      assert bump.event.id in ids
      assert List.last(ids) == change.event.id

      assert Enum.find_index(ids, &(&1 == bump.event.id)) <
               Enum.find_index(ids, &(&1 == call_receive.event.id))
    end

    test "a cast that leaves the state unchanged yields no state change" do
      {:ok, server} = Counter.start(5)
      {:ok, session} = ElixirScope.trace(pids: server, calls: [Counter])
      GenServer.cast(server, {:add, 0})
      GenServer.cast(server, {:add, 2})
      assert GenServer.call(server, :peek) == 7
      {:ok, info} = ElixirScope.stop_trace(session)
      assert info.state_changes == 1
      changes = events_of([server]) |> Enum.filter(&(&1.event.type == :state_change))
      assert [%{event: %{data: %{old: 5, new: 7}}}] = changes
    end
  end

  test "a message sent by name to several processes pairs with each holder's receive" do
    sender = Traced.runner()
    holders = for _ <- 1..3, do: spawn(fn -> sink_loop() end)
    names = for h <- holders, do: register_unique(h)
    {:ok, session} = ElixirScope.trace(pids: [sender | holders], messages: true)

    Traced.run(sender, fn ->
      for _ <- 1..5, n <- names, do: {send(n, :tick), send({n, node()}, :tock)}
    end)

    eventually(
      fn ->
        Enum.all?(holders, &(Process.info(&1, :message_queue_len) == {:message_queue_len, 0}))
      end,
      200
    )

    {:ok, _} = ElixirScope.stop_trace(session)
    events = events_of([sender | holders])
    holder_of = Map.new(Enum.zip(names, holders))

    # By name or by {name, node()}, the send records the name and the
    # process that held it, and its receive is that process's.
    for message <- [:tick, :tock] do
      of = fn type -> for e <- events, e.event.data == message, e.event.type == type, do: e end
      sends = of.(:message_send)
      assert length(sends) == 15

      for s <- sends do
        assert {name, pid} = s.event.peer
        assert holder_of[name] == pid
      end

      sent_to = Map.new(sends, &{&1.event.id, elem(&1.event.peer, 1)})
      receives = of.(:message_receive)
      assert length(receives) == 15

      for r <- receives do
        assert [receives: send_id] = r.links
        assert {sent_to[send_id], r.correlation_confidence} == {r.event.pid, 1.0}
      end
    end
  end

  test "a name that passes to another process is followed" do
    sender = Traced.runner()
    [first, second] = for _ <- 1..2, do: spawn(fn -> sink_loop() end)
    name = register_unique(first)
    {:ok, session} = ElixirScope.trace(pids: [sender], messages: true)
    Traced.run(sender, fn -> send(name, :one) end)
    Process.unregister(name)
    Process.register(second, name)
    # Holders looked up from a trace callback are kept for a millisecond.
    Process.sleep(5)
    Traced.run(sender, fn -> send(name, :two) end)
    {:ok, _} = ElixirScope.stop_trace(session)

    peers =
      for e <- events_of([sender]),
          e.event.type == :message_send,
          e.event.data in [:one, :two],
          do: {e.event.data, e.event.peer}

    assert peers == [one: {name, first}, two: {name, second}]
  end

  defp sink_loop do
    receive do
      _ -> sink_loop()
    end
  end

  defp register_unique(pid) do
    name = :"es_sink_#{System.unique_integer([:positive])}"
    Process.register(pid, name)
    name
  end

  test "descendants: true follows spawned children" do
    parent = Traced.runner()

    {:ok, session} =
      ElixirScope.trace(pids: parent, descendants: true, procs: true, messages: true)

    child =
      Traced.run(parent, fn ->
        me = self()
        child = spawn(fn -> send(me, :hello_from_child) end)
        receive do: (:hello_from_child -> child)
      end)

    {:ok, _} = ElixirScope.stop_trace(session)
    events = events_of([parent, child])
    spawn_event = find(events, &(&1.type == :process_spawn))
    assert spawn_event.event.peer == child
    child_send = find(events, &(&1.type == :message_send and &1.pid == child))
    assert child_send.event.data == :hello_from_child
    child_receive = find(events, &(&1.type == :message_receive and &1.data == :hello_from_child))
    assert child_receive.links == [receives: child_send.event.id]
    assert find(events, &(&1.type == :process_exit and &1.pid == child)).event.data == :normal
  end

  test "pids: :new traces processes spawned afterwards, and only those" do
    before = Traced.runner()
    {:ok, session} = ElixirScope.trace(pids: :new, procs: true, max_events: 1_000)
    late = spawn(fn -> :ok end)
    ref = Process.monitor(late)
    assert_receive {:DOWN, ^ref, _, _, _}
    {:ok, _} = ElixirScope.stop_trace(session)
    assert :erlang.trace_info(:new, :flags) == {:flags, []}
    assert find(events_of([late]), &(&1.type == :process_exit)).event.data == :normal
    assert events_of([before]) == []
  end

  test "payloads: :none keeps the shape and drops the data; a byte limit truncates" do
    runner = Traced.runner()
    big = String.duplicate("x", 1_000)
    {:ok, session} = ElixirScope.trace(pids: runner, calls: [{Client, :step, 1}], payloads: :none)
    Traced.run(runner, fn -> Client.step(5) end)
    {:ok, _} = ElixirScope.stop_trace(session)
    [call, ret] = events_of([runner])
    assert {call.event.function, call.event.arity, call.event.data} == {:step, 1, nil}
    assert {ret.event.type, ret.event.data} == {:function_return, nil}

    runner = Traced.runner()
    {:ok, session} = ElixirScope.trace(pids: runner, messages: true, payloads: 64)
    Traced.run(runner, fn -> send(self(), big) && receive(do: (^big -> :ok)) end)
    {:ok, _} = ElixirScope.stop_trace(session)
    sent = find(events_of([runner]), &(&1.type == :message_send and &1.peer == runner))
    assert {:truncated, size, _hint} = sent.event.data
    assert size > 1_000
  end

  describe "limits stop the trace with the right reason" do
    test "max_events" do
      runner = Traced.runner()

      {:ok, session} =
        ElixirScope.trace(pids: runner, calls: [{Client, :step, 1}], max_events: 10)

      Traced.run(runner, fn -> Client.loop(100) end)
      info = wait_stopped(session)
      assert info.stopped_because == :max_events
      assert info.events == 10
      assert info.dropped >= 0
      assert :erlang.trace_info(runner, :flags) == {:flags, []}
      assert :erlang.trace_info({Client, :step, 1}, :traced) == {:traced, false}
      assert length(events_of([runner])) == 10
    end

    test "rate_limit" do
      runner = Traced.runner()

      {:ok, session} =
        ElixirScope.trace(pids: runner, calls: [{Client, :step, 1}], rate_limit: {50, 60_000})

      Traced.run(runner, fn -> Client.loop(1_000) end)
      info = wait_stopped(session)
      assert info.stopped_because == :rate_limit
      assert info.events == 50
    end

    test "duration" do
      runner = Traced.runner()
      {:ok, session} = ElixirScope.trace(pids: runner, messages: true, duration_ms: 50)
      assert wait_stopped(session).stopped_because == :duration
      assert :erlang.trace_info(runner, :flags) == {:flags, []}
    end

    test "owner death" do
      runner = Traced.runner()
      test = self()

      owner =
        spawn(fn ->
          {:ok, session} = ElixirScope.trace(pids: runner, messages: true)
          send(test, {:session, session})
        end)

      assert_receive {:session, session}
      refute Process.alive?(owner)
      assert wait_stopped(session).stopped_because == :owner_down
      {:ok, info} = ElixirScope.stop_trace(session)
      assert info.stopped_because == :owner_down, "the first reason stays"
    end
  end

  test "tracing survives a traced process crashing" do
    {:ok, server} = Counter.start(0)
    client = Traced.runner()

    {:ok, session} =
      ElixirScope.trace(pids: [client, server], calls: [Counter], procs: true, messages: true)

    ExUnit.CaptureLog.capture_log(fn ->
      Traced.run(client, fn -> catch_exit(GenServer.call(server, :crash)) end)
    end)

    {:ok, other} = Counter.start(1)
    assert ElixirScope.trace_info(session).running
    assert Traced.run(client, fn -> GenServer.call(other, :peek) end) == 1
    {:ok, info} = ElixirScope.stop_trace(session)
    assert info.stopped_because == :requested
    events = events_of([client, server])
    exception = find(events, &(&1.type == :function_exception))
    assert {:error, %RuntimeError{message: "boom"}} = exception.event.data
    assert find(events, &(&1.type == :process_exit and &1.pid == server))
    assert find(events, &(&1.type == :message_send and &1.pid == client and &1.peer == other))
  end

  describe "refusals" do
    test "another tool's tracer is never taken over" do
      runner = Traced.runner()
      :erlang.trace(runner, true, [:send, {:tracer, self()}])

      assert {:error, {:already_traced, ^runner, _}} =
               ElixirScope.trace(pids: runner, messages: true)

      assert :erlang.trace_info(runner, :tracer) == {:tracer, self()}
      :erlang.trace(runner, false, [:all])
    end

    test "bad options" do
      assert ElixirScope.trace(messages: true) == {:error, {:missing_option, :pids}}
      assert ElixirScope.trace(pids: self()) == {:error, :nothing_to_trace}
      assert ElixirScope.trace(pids: self(), colour: :red) == {:error, {:unknown_option, :colour}}

      assert ElixirScope.trace(pids: self(), messages: true, max_events: 0) ==
               {:error, {:invalid_option, :max_events, 0}}

      assert ElixirScope.trace(pids: self(), calls: ["x"]) ==
               {:error, {:invalid_option, :calls, "x"}}

      assert {:error, {:too_broad, _}} = ElixirScope.trace(pids: :new, calls: :all)

      assert ElixirScope.trace(pids: self(), calls: [NoSuchModule]) ==
               {:error, {:module_not_found, NoSuchModule}}

      dead = spawn(fn -> :ok end)
      Process.sleep(10)
      assert ElixirScope.trace(pids: dead, messages: true) == {:error, {:no_such_process, dead}}

      # A refused session leaves no pattern or flag behind.
      assert ElixirScope.trace(pids: [self(), dead], calls: [{Client, :step, 1}]) ==
               {:error, {:no_such_process, dead}}

      assert :erlang.trace_info({Client, :step, 1}, :traced) == {:traced, false}
      assert :erlang.trace_info(self(), :flags) == {:flags, []}
      assert ElixirScope.trace(:nope) == {:error, {:invalid_options, :nope}}

      assert ElixirScope.trace(pids: self(), messages: true, pipeline: :no_such_pipeline) ==
               {:error, {:no_pipeline, :no_such_pipeline}}

      assert Process.whereis(ElixirScope.Tracer.Server) == nil
    end

    test "one session at a time" do
      {:ok, session} = ElixirScope.trace(pids: Traced.runner(), messages: true)
      assert {:error, {:session_active, _}} = ElixirScope.trace(pids: self(), messages: true)
      {:ok, _} = ElixirScope.stop_trace(session)
    end
  end

  test "the pipeline's own processes are never traced" do
    {:ok, session} = ElixirScope.trace(pids: :all, messages: true, procs: true, max_events: 5_000)
    ElixirScope.Capture.PipelineManager.get_pipeline_stats()
    {:ok, _} = ElixirScope.stop_trace(session)
    manager = Process.whereis(ElixirScope.Capture.PipelineManager)
    assert events_of([manager, session.server]) == []
  end
end
