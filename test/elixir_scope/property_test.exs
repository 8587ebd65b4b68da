defmodule ElixirScope.PropertyTest do
  # PropEr (Debian's erlang-proper) properties, driven from ExUnit.
  use ExUnit.Case

  alias ElixirScope.Event
  alias ElixirScope.Storage.DataAccess
  import ElixirScope.TestEvents

  @numtests 100

  defp check(prop) do
    assert :proper.quickcheck(prop, [
             :quiet,
             {:numtests, @numtests},
             {:on_output, fn _, _ -> :ok end}
           ]) ==
             true
  end

  defp event_gen(pids) do
    :proper_types.tuple([
      :proper_types.elements(pids),
      :proper_types.elements(Event.types()),
      :proper_types.oneof([:proper_types.elements([nil, :alpha, Enum]), :proper_types.atom()]),
      :proper_types.oneof([:proper_types.return(nil), :proper_types.range(0, 254)]),
      :proper_types.any()
    ])
  end

  test "every valid event is stored exactly once, intact, in per-pid order" do
    pids = for _ <- 1..4, do: spawn(fn -> Process.sleep(:infinity) end)

    p =
      private_pipeline(
        capture: [max_payload_bytes: 1_000_000],
        pipeline: [min_workers: 3, target_workers: 3]
      )

    opts = [pipeline: p]

    prop =
      :proper.forall(:proper_types.list(event_gen(pids)), fn specs ->
        events =
          for {pid, type, fun, arity, data} <- specs do
            %Event{type: type, pid: pid, module: Mod, function: fun, arity: arity, data: data}
          end

        {:ok, n} = ElixirScope.ingest_batch(events, opts)
        :ok = ElixirScope.flush(5_000, opts)
        ours = DataAccess.query_recent(n, opts) |> Enum.map(& &1.event) |> Enum.reverse()

        n == length(events) and
          Enum.map(ours, &%{&1 | id: nil, timestamp: nil, wall_time: nil}) == events and
          Enum.all?(pids, fn pid ->
            ids = for e <- ours, e.pid == pid, do: e.id

            ids == Enum.sort(ids) and
              DataAccess.query_by_pid(pid, [limit: :infinity] ++ opts) |> length() >= length(ids)
          end)
      end)

    check(prop)
    s = ElixirScope.stats(opts)
    assert s.ingested == s.stored and s.dropped_total == 0 and s.queued == 0
  end

  test "random terms never crash ingest; each gives an id or a clear error" do
    p = private_pipeline()
    opts = [pipeline: p]

    prop =
      :proper.forall(:proper_types.any(), fn term ->
        single =
          case ElixirScope.ingest(term, opts) do
            {:ok, id} -> is_integer(id)
            {:error, {:invalid_event, _}} -> true
            _ -> false
          end

        as_data = match?({:ok, _}, ElixirScope.ingest(call(self(), term), opts))

        batch =
          case ElixirScope.ingest_batch([term, call(self(), term)], opts) do
            {:ok, 2} -> true
            {:error, {:invalid_events, 1, [{0, _}]}} -> true
            _ -> false
          end

        single and as_data and batch
      end)

    check(prop)
    :ok = ElixirScope.flush(5_000, opts)
    s = ElixirScope.stats(opts)
    assert s.ingested == s.stored + s.dropped_total + s.queued
  end
end
