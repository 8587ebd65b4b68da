# Pipeline benchmark. Run: ./setup.sh bench   (or MIX_ENV=prod mix run bench/pipeline.exs)
# Env: BENCH_EVENTS (end-to-end events per run, default 2_000_000),
#      BENCH_RATE_SECONDS (seconds per paced-rate run, default 3).
# Prints, on the default config: ingest cost; end to end with
# ingest_batch(on_full: :wait) for BENCH_EVENTS, 1M and 10M events (the
# last through the 1M-event store), against the guide's pure-Elixir design
# (GenServer consumer + ETS :set with :duplicate_bag indexes) in the same
# run; what a burst that drops events leaves retained; bytes per retained
# event; bulk reads; ring->store latency at paced rates. The drain rate of
# one worker is bench/drain (./setup.sh bench-drain).
alias ElixirScope.Capture.PipelineManager
alias ElixirScope.Event

# The benches drive pipelines into pressure on purpose: keep their logs out
# of the figures.
Logger.configure(level: :error)

defmodule Bench do
  def env_int(name, default), do: String.to_integer(System.get_env(name, to_string(default)))

  # Named pipelines resolve their native handle from :persistent_term, the
  # fastest path (pipelines addressed by pid go through the registry).
  def pipeline(config) do
    name = :"bench_pipeline_#{System.unique_integer([:positive])}"
    {:ok, _} = PipelineManager.start_link(name: name, store: :private, config: config)
    name
  end

  def stop(p), do: GenServer.stop(p)

  def struct_event(pid, i),
    do: %Event{
      type: :function_call,
      pid: pid,
      module: Bench,
      function: :work,
      arity: 2,
      data: [i, :ok]
    }

  def tuple_event(pid, i), do: {:function_call, pid, Bench, :work, 2, [i, :ok], nil}

  def median(xs), do: xs |> Enum.sort() |> Enum.at(div(length(xs), 2))

  def time_us(fun) do
    {us, _} = :timer.tc(fun)
    us
  end

  def batches(n, size, pids, build) do
    for b <- 0..(div(n, size) - 1) do
      for i <- 0..(size - 1), do: build.(elem(pids, rem(b * size + i, tuple_size(pids))), i)
    end
  end

  # Big rings and store; no load shedding (it would drop events while the
  # rings fill) and a memory limit above the rings' size, so raw costs are
  # measured rather than the pressure policy.
  @big [
    capture: [ring_size: 262_144, shards: 8],
    storage: [max_events: 4_000_000],
    backpressure: [shed_fraction: 0.0, memory_limit_mb: 4096]
  ]

  # Ingest cost as a producer pays it, on the default config. Each batch is
  # built just before its ingest_batch call (its terms are in cache, as a
  # real producer's are) and only the call is timed. The workers drain
  # meanwhile, and every 10 batches the producer waits for them (flush), so
  # the rings stay at what a sustainable rate leaves in them. Median of 5
  # runs of 200 batches. The burst figure is the older measure: 1M compact
  # tuples built up front (about 100 MB of terms), ingested back to back
  # into big rings; it is bound by memory traffic more than by the NIF.
  def ingest_cost do
    pids = List.to_tuple(for _ <- 1..16, do: spawn(fn -> :ok end))
    ev = struct_event(self(), 1)
    # A fresh pipeline per figure: 5 runs of 200k events stay within the
    # default store bound, so no figure pays for another's evictions.
    {single, d1} = on_default(fn p -> median(for _ <- 1..5, do: single_cost(p, ev)) end)

    {structs, d2} =
      on_default(fn p -> median(for _ <- 1..5, do: batch_cost(p, pids, &struct_event/2)) end)

    {tuples, d3} =
      on_default(fn p -> median(for _ <- 1..5, do: batch_cost(p, pids, &tuple_event/2)) end)

    big = pipeline(@big)
    prebuilt = batches(1_000_000, 1000, pids, &tuple_event/2)

    burst =
      median(
        for _ <- 1..3 do
          us =
            time_us(fn -> Enum.each(prebuilt, &ElixirScope.ingest_batch(&1, pipeline: big)) end)

          :ok = ElixirScope.flush(30_000, pipeline: big)
          us * 1000 / 1_000_000
        end
      )

    dropped = d1 + d2 + d3 + ElixirScope.stats(pipeline: big).dropped_total
    stop(big)
    {single, structs, tuples, burst, dropped}
  end

  defp on_default(fun) do
    p = pipeline([])
    result = fun.(p)
    dropped = ElixirScope.stats(pipeline: p).dropped_total
    stop(p)
    {result, dropped}
  end

  # 200k calls from one process (one shard), in chunks of 10k with a flush
  # after each.
  defp single_cost(p, ev) do
    us =
      Enum.reduce(1..20, 0, fn _, acc ->
        us = time_us(fn -> ingest_loop(ev, p, 10_000) end)
        :ok = ElixirScope.flush(30_000, pipeline: p)
        acc + us
      end)

    us * 1000 / 200_000
  end

  defp ingest_loop(_ev, _p, 0), do: :ok

  defp ingest_loop(ev, p, n) do
    {:ok, _} = ElixirScope.ingest(ev, pipeline: p)
    ingest_loop(ev, p, n - 1)
  end

  defp batch_cost(p, pids, build) do
    ns =
      Enum.reduce(0..199, 0, fn b, acc ->
        batch = for i <- 0..999, do: build.(elem(pids, rem(i, 16)), b * 1000 + i)
        t0 = System.monotonic_time(:nanosecond)
        {:ok, 1000} = ElixirScope.ingest_batch(batch, pipeline: p)
        t1 = System.monotonic_time(:nanosecond)
        if rem(b, 10) == 9, do: :ok = ElixirScope.flush(30_000, pipeline: p)
        acc + t1 - t0
      end)

    ns / 200_000
  end

  # 100 distinct batches of 1000 compact tuples over 64 pids, cycled: any
  # number of events streams through without building them all up front.
  def batch_pool do
    pids = List.to_tuple(for _ <- 1..64, do: spawn(fn -> Process.sleep(:infinity) end))

    for b <- 0..99 do
      for i <- 0..999, do: tuple_event(elem(pids, rem(b * 1000 + i, 64)), b * 1000 + i)
    end
    |> List.to_tuple()
  end

  # End to end on the default config: `n` events through ingest_batch
  # with `on_full`, until flush returns. Returns events/s and the stats.
  def end_to_end(pool, n, on_full) do
    p = pipeline([])

    us =
      time_us(fn ->
        for b <- 0..(div(n, 1000) - 1),
            do: ElixirScope.ingest_batch(elem(pool, rem(b, 100)), pipeline: p, on_full: on_full)

        :ok = ElixirScope.flush(120_000, pipeline: p)
      end)

    s = ElixirScope.stats(pipeline: p)
    mem = ElixirScope.Storage.DataAccess.stats(pipeline: p)
    {n * 1_000_000 / us, s, mem, p}
  end

  def median_run(runs), do: runs |> Enum.sort_by(&elem(&1, 0)) |> Enum.at(div(length(runs), 2))

  # Bulk reads, each in a fresh process (its result built in its own heap,
  # as a caller's would be): median ns per event over 3 tries.
  def read_cost(fun) do
    runs =
      for _ <- 1..3 do
        Task.async(fn ->
          {us, events} = :timer.tc(fun)
          {us, length(events)}
        end)
        |> Task.await(120_000)
      end

    {us, n} = median_run(runs)
    {us * 1000 / max(n, 1), n}
  end

  def paced(rate, seconds) do
    p = pipeline([])
    pid = self()
    per_ms = div(rate, 1000)
    batch = for i <- 1..per_ms, do: tuple_event(pid, i)
    start = System.monotonic_time(:millisecond)

    Enum.each(0..(seconds * 1000 - 1), fn tick ->
      ElixirScope.ingest_batch(batch, pipeline: p)
      wait = start + tick + 1 - System.monotonic_time(:millisecond)
      if wait > 0, do: Process.sleep(wait)
    end)

    :ok = ElixirScope.flush(10_000, pipeline: p)
    st = PipelineManager.get_pipeline_stats(p)
    s = ElixirScope.stats(pipeline: p)
    stop(p)
    {st, s}
  end

  # The guide's design in pure Elixir: a GenServer consumer writing batches
  # into an ETS :set plus :duplicate_bag indexes by time, pid and {m, f}.
  defmodule EtsConsumer do
    use GenServer

    def init(_) do
      {:ok,
       %{
         events: :ets.new(:events, [:set, :public]),
         by_time: :ets.new(:by_time, [:duplicate_bag, :public]),
         by_pid: :ets.new(:by_pid, [:duplicate_bag, :public]),
         by_mf: :ets.new(:by_mf, [:duplicate_bag, :public]),
         next: 1
       }}
    end

    def handle_cast({:batch, batch}, s) do
      now = System.monotonic_time(:nanosecond)

      {rows, next} =
        Enum.map_reduce(batch, s.next, fn {type, pid, m, f, a, data, peer}, id ->
          {{id, type, pid, now, m, f, a, data, peer}, id + 1}
        end)

      :ets.insert(s.events, rows)
      :ets.insert(s.by_time, for(r <- rows, do: {elem(r, 3), elem(r, 0)}))
      :ets.insert(s.by_pid, for(r <- rows, do: {elem(r, 2), elem(r, 0)}))
      :ets.insert(s.by_mf, for(r <- rows, do: {{elem(r, 4), elem(r, 5)}, elem(r, 0)}))
      {:noreply, %{s | next: next}}
    end

    def handle_call(:count, _, s), do: {:reply, :ets.info(s.events, :size), s}
  end

  def ets_baseline(pool, n) do
    runs =
      for _ <- 1..3 do
        {:ok, c} = GenServer.start(EtsConsumer, nil)

        us =
          time_us(fn ->
            for b <- 0..(div(n, 1000) - 1),
                do: GenServer.cast(c, {:batch, elem(pool, rem(b, 100))})

            ^n = GenServer.call(c, :count, :infinity)
          end)

        GenServer.stop(c)
        n * 1_000_000 / us
      end

    median(runs)
  end
end

n = Bench.env_int("BENCH_EVENTS", 2_000_000)
secs = Bench.env_int("BENCH_RATE_SECONDS", 3)
fmt = fn x -> :erlang.float_to_binary(x / 1, decimals: 1) end
cores = System.schedulers_online()

IO.puts(
  "elixir_scope pipeline bench — #{cores} schedulers, OTP #{System.otp_release()}, #{n} events end to end\n"
)

{single, structs, tuples, burst, dropped} = Bench.ingest_cost()
IO.puts("ingest, through the public API, default config (median of 5):")
IO.puts("  single ingest/2, %Event{}           #{fmt.(single)} ns/call    (target <= 250)")
IO.puts("  ingest_batch, %Event{} x1000        #{fmt.(structs)} ns/event   (target <= 200)")
IO.puts("  ingest_batch, compact tuple x1000   #{fmt.(tuples)} ns/event   (target <= 50)")
IO.puts("    (batches built just before each call; the call is timed)")

IO.puts(
  "  burst of 1M prebuilt compact tuples #{fmt.(burst)} ns/event   (memory-bound, median of 3)"
)

IO.puts("  (dropped during ingest runs: #{dropped})\n")

pool = Bench.batch_pool()
stop = fn {_, _, _, p} -> Bench.stop(p) end

wait = fn n ->
  for(_ <- 1..3, do: Bench.end_to_end(pool, n, :wait) |> tap(stop)) |> Bench.median_run()
end

{rate, s, _mem, _} = wait.(n)
ets = Bench.ets_baseline(pool, n)

IO.puts(
  "end to end, ingest_batch(on_full: :wait) -> stored, indexed, correlated; default config:"
)

IO.puts(
  "  #{n} events: #{fmt.(rate / 1.0e6)} M events/s (target >= 2.5), dropped #{s.dropped_total}, stored #{s.stored}"
)

IO.puts(
  "  guide's design (GenServer + ETS :set + 3 :duplicate_bag indexes), same events: " <>
    "#{fmt.(ets / 1.0e6)} M events/s -> native is #{fmt.(rate / ets)}x (target >= 8x)"
)

{rate1, s1, mem1, _} = wait.(1_000_000)
big = 10 * 1_000_000
{rate10, s10, _, _} = wait.(big)

IO.puts(
  "  1M events: #{fmt.(rate1 / 1.0e6)} M events/s, dropped #{s1.dropped_total}; " <>
    "10M through the 1M-event store: #{fmt.(rate10 / 1.0e6)} M events/s, dropped #{s10.dropped_total} " <>
    "(#{fmt.(100 * rate10 / rate1)}% of the 1M figure; target >= 90%), retained #{s10.retained}"
)

IO.puts(
  "  store at 1M retained: #{fmt.(mem1.memory_bytes / max(mem1.retained, 1))} bytes per event, indexes included (target <= 128)\n"
)

{_, burst, _, bp} = Bench.end_to_end(pool, 2_000_000, :drop)

IO.puts(
  "burst of 2M events through ingest_batch (on_full: :drop, default config): " <>
    "stored #{burst.stored}, dropped #{burst.dropped_total} (#{inspect(burst.dropped)}), " <>
    "retained #{burst.retained} (target: all stored, up to max_events)"
)

Bench.stop(bp)

# Bulk reads from a full default store (1M events over 64 pids).
{_, _, _, rp} = Bench.end_to_end(pool, 1_000_000, :wait)
alias ElixirScope.Storage.DataAccess
[pid | _] = DataAccess.query_recent(1, pipeline: rp) |> Enum.map(& &1.event.pid)

{per_fun, nf} =
  Bench.read_cost(fn ->
    DataAccess.query_by_function(Bench, :work, pipeline: rp, limit: :infinity)
  end)

{per_pid, np} =
  Bench.read_cost(fn -> DataAccess.query_by_pid(pid, pipeline: rp, limit: 10_000) end)

{per_stream, ns} =
  Bench.read_cost(fn ->
    DataAccess.stream(function: {Bench, :work}, pipeline: rp)
    |> Stream.map(& &1.event.id)
    |> Enum.to_list()
  end)

Bench.stop(rp)

IO.puts(
  "bulk reads (each in a fresh process, median of 3): query_by_function #{nf} events " <>
    "#{fmt.(per_fun)} ns/event (#{fmt.(per_fun * nf / 1.0e6)} ms; target <= 500 ns); " <>
    "query_by_pid #{np} events #{fmt.(per_pid)} ns/event (#{fmt.(per_pid * np / 1.0e6)} ms; target <= 5 ms); " <>
    "streamed #{ns} events, ids kept #{fmt.(per_stream)} ns/event\n"
)

IO.puts("ring -> store latency at a paced rate (#{secs} s each, default config):")

for r <- [10_000, 50_000] do
  {st, s} = Bench.paced(r, secs)

  IO.puts(
    "  #{r}/s: p50 #{:erlang.float_to_binary(st.latency_p50_ms, decimals: 3)} ms, " <>
      "p95 #{:erlang.float_to_binary(st.latency_p95_ms, decimals: 3)} ms, " <>
      "p99 #{:erlang.float_to_binary(st.latency_p99_ms, decimals: 3)} ms   (target p99 <= 1 ms)   " <>
      "stored #{s.stored}, dropped #{s.dropped_total}"
  )
end

# Observability costs, on a fresh default pipeline holding 100k events.
{_, _, _, op} = Bench.end_to_end(pool, 100_000, :wait)
per_call = fn fun -> Bench.median(for _ <- 1..200, do: Bench.time_us(fun)) end
text_us = per_call.(fn -> ElixirScope.Metrics.Prometheus.text(op) end)
emit_us = per_call.(fn -> ElixirScope.Metrics.Layer2.emit_metrics(op) end)
Bench.stop(op)

IO.puts(
  "observability: one Prometheus.text/1 #{text_us} µs, one telemetry emit_metrics/1 #{emit_us} µs " <>
    "(without :telemetry loaded; median of 200; neither touches the ingest or worker paths)"
)
