# Demo on the default pipeline: a few processes report what they do
# (calls, returns, messages, state changes) through ElixirScope.ingest/1;
# the native pipeline stores and indexes it; we query it back.
# (Capturing straight from the VM with the erl_tracer NIF comes next.)
alias ElixirScope.Event
alias ElixirScope.Storage.DataAccess

defmodule Demo.Counter do
  # A tiny server that records its own calls, messages and state changes.
  def start, do: spawn(fn -> loop(0) end)

  defp loop(count) do
    receive do
      {:add, n, from} = msg ->
        me = self()
        ElixirScope.ingest(%Event{type: :message_receive, pid: me, data: msg, peer: from})

        ElixirScope.ingest(%Event{
          type: :function_call,
          pid: me,
          module: __MODULE__,
          function: :add,
          arity: 2,
          data: [count, n]
        })

        new = count + n
        ElixirScope.ingest(%Event{type: :state_change, pid: me, data: %{old: count, new: new}})

        ElixirScope.ingest(%Event{
          type: :function_return,
          pid: me,
          module: __MODULE__,
          function: :add,
          arity: 2,
          data: new
        })

        ElixirScope.ingest(%Event{type: :message_send, pid: me, data: {:total, new}, peer: from})
        send(from, {:total, new})
        loop(new)
    end
  end
end

counter = Demo.Counter.start()

clients =
  for name <- [:alice, :bob] do
    parent = self()

    spawn(fn ->
      for n <- 1..3 do
        ElixirScope.ingest(%Event{
          type: :message_send,
          pid: self(),
          data: {:add, n, self()},
          peer: counter
        })

        send(counter, {:add, n, self()})

        receive do
          {:total, _} = msg ->
            ElixirScope.ingest(%Event{
              type: :message_receive,
              pid: self(),
              data: msg,
              peer: counter
            })
        end
      end

      send(parent, {:done, name})
    end)
  end

for _ <- clients, do: receive(do: ({:done, _} -> :ok))
:ok = ElixirScope.flush()

names = Map.new(Enum.zip(clients, ["alice", "bob"])) |> Map.put(counter, "counter")
who = fn pid -> Map.get(names, pid, inspect(pid)) end

IO.puts("\n== Message flow (in order) ==")

for %{event: e} <-
      DataAccess.query_by_time_range(-0x8000_0000_0000_0000, 0x7FFF_FFFF_FFFF_FFFF,
        limit: :infinity
      ),
    e.type == :message_send and e.pid in Map.keys(names) do
  IO.puts(
    "  #{String.pad_trailing(who.(e.pid), 8)} -> #{String.pad_trailing(who.(e.peer), 8)} #{inspect(e.data)}"
  )
end

IO.puts("\n== What the counter did ==")

for %{event: e} <- DataAccess.query_by_pid(counter) do
  detail =
    case e.type do
      :function_call ->
        "call   #{inspect(e.module)}.#{e.function}#{inspect(List.to_tuple(e.data))}"

      :function_return ->
        "return #{inspect(e.data)}"

      :state_change ->
        "state  #{e.data.old} -> #{e.data.new}"

      :message_receive ->
        "recv   #{inspect(e.data)} from #{who.(e.peer)}"

      :message_send ->
        "send   #{inspect(e.data)} to #{who.(e.peer)}"
    end

  IO.puts("  ##{String.pad_trailing(to_string(e.id), 4)} #{detail}")
end

IO.puts("\n== Pipeline ==")
s = ElixirScope.stats()

IO.puts(
  "  ingested #{s.ingested}, stored #{s.stored}, dropped #{s.dropped_total}, queued #{s.queued}, workers #{s.workers}"
)

p = ElixirScope.Capture.PipelineManager.get_pipeline_stats()

IO.puts(
  "  ring->store latency p50 #{Float.round(p.latency_p50_ms, 3)} ms, p99 #{Float.round(p.latency_p99_ms, 3)} ms"
)
