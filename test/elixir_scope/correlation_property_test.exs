defmodule ElixirScope.CorrelationPropertyTest do
  # Ground truth for the correlator through the real pipeline: random
  # programs of nested calls (with exceptions) and messages (identical
  # contents from several senders included) across pids, interleaved in a
  # random order that keeps each pid's order, drained by several workers.
  # (The Rust proptest in correlator/tests.rs adds lost returns and spawns.)
  use ExUnit.Case

  alias ElixirScope.Event
  alias ElixirScope.Storage.DataAccess
  import ElixirScope.TestEvents

  @pids 4

  defp step_gen do
    :proper_types.frequency([
      {4, :proper_types.tuple([:proper_types.return(:call), :proper_types.range(1, 3)])},
      {3, :proper_types.return(:return)},
      {1, :proper_types.return(:exception)},
      {3,
       :proper_types.tuple([
         :proper_types.return(:send),
         :proper_types.range(0, @pids - 1),
         :proper_types.range(1, 3)
       ])},
      {3, :proper_types.return(:receive)}
    ])
  end

  defp program_gen do
    :proper_types.tuple([
      :proper_types.vector(@pids, :proper_types.list(step_gen())),
      :proper_types.list(:proper_types.range(0, @pids - 1))
    ])
  end

  # Runs the programs in the order `turns` picks; returns the events in that
  # order, each tagged with the truth about it.
  defp simulate(programs, turns, pids) do
    state = %{
      pcs: List.duplicate(0, @pids),
      stacks: Map.new(0..(@pids - 1), &{&1, []}),
      boxes: Map.new(0..(@pids - 1), &{&1, :queue.new()}),
      senders: %{},
      out: []
    }

    turns = turns ++ Enum.flat_map(1..200, fn _ -> Enum.to_list(0..(@pids - 1)) end)

    Enum.reduce(Enum.with_index(turns), state, fn {p, k}, st ->
      steps = Enum.at(programs, p)
      pc = Enum.at(st.pcs, p)

      if pc >= length(steps),
        do: st,
        else:
          run(
            Enum.at(steps, pc),
            p,
            k,
            %{st | pcs: List.replace_at(st.pcs, p, pc + 1)},
            pids
          )
    end)
    |> then(fn st -> {Enum.reverse(st.out), st.senders} end)
  end

  defp run({:call, f}, p, k, st, pids) do
    e = %Event{
      type: :function_call,
      pid: elem(pids, p),
      module: M,
      function: :"f#{f}",
      arity: 0,
      data: []
    }

    emit(%{st | stacks: Map.update!(st.stacks, p, &[{k, f} | &1])}, e, {:call, k})
  end

  defp run(kind, p, _k, st, pids) when kind in [:return, :exception] do
    case st.stacks[p] do
      [] ->
        st

      [{call_key, f} | rest] ->
        type = if kind == :return, do: :function_return, else: :function_exception

        e = %Event{
          type: type,
          pid: elem(pids, p),
          module: M,
          function: :"f#{f}",
          arity: 0,
          data: :ok
        }

        emit(%{st | stacks: Map.put(st.stacks, p, rest)}, e, {:completes, call_key})
    end
  end

  defp run({:send, to, content}, p, k, st, pids) do
    e = %Event{
      type: :message_send,
      pid: elem(pids, p),
      data: {:msg, content},
      peer: elem(pids, to)
    }

    st = %{st | boxes: Map.update!(st.boxes, to, &:queue.in({k, p, content}, &1))}

    st = %{
      st
      | senders: Map.update(st.senders, {to, content}, MapSet.new([p]), &MapSet.put(&1, p))
    }

    emit(st, e, {:send, k})
  end

  defp run(:receive, p, _k, st, pids) do
    case :queue.out(st.boxes[p]) do
      {:empty, _} ->
        st

      {{:value, {send_key, _sender, content}}, box} ->
        e = %Event{type: :message_receive, pid: elem(pids, p), data: {:msg, content}}
        emit(%{st | boxes: Map.put(st.boxes, p, box)}, e, {:receives, send_key, {p, content}})
    end
  end

  defp emit(st, e, truth), do: %{st | out: [{e, truth} | st.out]}

  test "stored links match the ground truth whatever the drain order" do
    pids = List.to_tuple(for _ <- 1..@pids, do: spawn(fn -> Process.sleep(:infinity) end))

    prop =
      :proper.forall(program_gen(), fn {programs, turns} ->
        p = private_pipeline(capture: [shards: 4], pipeline: [min_workers: 3, target_workers: 3])
        {tagged, senders} = simulate(programs, turns, pids)
        check_program(p, tagged, senders)
      end)

    assert :proper.quickcheck(prop, [:quiet, {:numtests, 60}, {:on_output, fn _, _ -> :ok end}]) ==
             true
  end

  defp check_program(_p, [], _senders), do: true

  defp check_program(p, tagged, senders) do
    {events, truths} = Enum.unzip(tagged)
    {:ok, n} = ElixirScope.ingest_batch(events, pipeline: p)
    :ok = ElixirScope.flush(5_000, pipeline: p)
    stored = DataAccess.query_recent(n, pipeline: p) |> Enum.reverse()
    # Ids follow the batch order, so the k-th stored event is the k-th sent.
    id_of =
      Map.new(Enum.with_index(truths), fn {t, i} -> {key(t, i), Enum.at(stored, i).event.id} end)

    Enum.zip(stored, truths)
    |> Enum.all?(fn {s, truth} -> holds?(s, truth, id_of, senders) end)
  end

  defp key({:call, k}, _), do: {:turn, k}
  defp key({:send, k}, _), do: {:turn, k}
  defp key(_, i), do: {:index, i}

  defp holds?(s, {:completes, call_key}, id_of, _) do
    call_id = id_of[{:turn, call_key}]
    s.correlation_id == call_id and {:completes, call_id} in s.links
  end

  defp holds?(s, {:receives, send_key, channel}, id_of, senders) do
    send_id = id_of[{:turn, send_key}]
    linked = {:receives, send_id} in s.links

    if MapSet.size(senders[channel]) == 1,
      do: linked and s.correlation_confidence == 1.0,
      else: linked or s.correlation_confidence < 1.0
  end

  defp holds?(_s, _truth, _id_of, _senders), do: true
end
