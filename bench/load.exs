# Load benchmark (guide §5): paced load on a pipeline with the default config.
# Run: ./setup.sh bench-load   (or MIX_ENV=prod mix run bench/load.exs)
# Env: BENCH_LOAD_SECONDS  seconds of each paced phase (default 30)
#      BENCH_RAMP_SECONDS  seconds of each ramp step (default 3)
#
# Phases, each on a fresh pipeline (default config, store of its own):
#   sustained 10k events/s; a 50k events/s burst; then a ramp that doubles
#   the rate until events are dropped, reporting the highest rate held with
#   zero drops. Printed per phase: events/s achieved, ring->store latency
#   p50/p95/p99, drops by cause, peak Layer 2 memory (rings + store) and
#   peak VM RSS, CPU% of the machine used by the native worker threads and
#   by the whole VM (which includes the load generator).
alias ElixirScope.Capture.PipelineManager

# Pipelines are driven into pressure on purpose here: keep their logs out
# of the figures.
Logger.configure(level: :error)
alias ElixirScope.Native

defmodule LoadBench do
  @ticks_per_second 1000
  @pids 64

  def env_int(name, default), do: String.to_integer(System.get_env(name, to_string(default)))

  def pipeline do
    name = :"load_bench_#{System.unique_integer([:positive])}"
    {:ok, pid} = PipelineManager.start_link(name: name, store: :private)
    Process.unlink(pid)
    name
  end

  # Paced producers: each keeps its share of `rate` by ingesting, every
  # tick, the events it is behind (compact tuples over 64 pids).
  def produce(name, rate, seconds, producers) do
    pids = for _ <- 1..@pids, do: spawn(fn -> Process.sleep(:infinity) end)

    events =
      for i <- 1..4096,
          do: {:function_call, Enum.at(pids, rem(i, @pids)), Load, :work, 1, [i], nil}

    tasks =
      for p <- 1..producers do
        Task.async(fn -> pace(name, rate / producers, seconds, events, p) end)
      end

    sent = tasks |> Enum.map(&Task.await(&1, :infinity)) |> Enum.sum()
    Enum.each(pids, &Process.exit(&1, :kill))
    sent
  end

  defp pace(name, rate, seconds, events, _p) do
    t0 = System.monotonic_time(:microsecond)
    stop = t0 + seconds * 1_000_000
    pace_loop(name, rate, t0, stop, events, 0)
  end

  defp pace_loop(name, rate, t0, stop, events, sent) do
    now = System.monotonic_time(:microsecond)

    if now >= stop do
      sent
    else
      due = trunc(rate * (now - t0) / 1_000_000) - sent
      sent = sent + send_n(name, events, max(due, 0))
      Process.sleep(div(1000, @ticks_per_second))
      pace_loop(name, rate, t0, stop, events, sent)
    end
  end

  defp send_n(_name, _events, 0), do: 0

  defp send_n(name, events, n) do
    chunk = min(n, length(events))
    {_, _} = ElixirScope.ingest_batch(Enum.take(events, chunk), pipeline: name) |> ok_count()
    chunk + send_n(name, events, n - chunk)
  end

  defp ok_count({:ok, n}), do: {:ok, n}
  defp ok_count(other), do: raise("ingest failed: #{inspect(other)}")

  # CPU ticks (utime + stime) of the VM and of its native worker threads.
  def cpu_ticks do
    tasks = File.ls!("/proc/self/task")

    Enum.reduce(tasks, {0, 0}, fn tid, {all, workers} ->
      case File.read("/proc/self/task/#{tid}/stat") do
        {:ok, stat} ->
          [comm_end | _] = :binary.matches(stat, ") ") |> Enum.map(&elem(&1, 0)) |> Enum.reverse()
          comm = binary_part(stat, 0, comm_end)

          fields =
            stat |> binary_part(comm_end + 2, byte_size(stat) - comm_end - 2) |> String.split()

          ticks = String.to_integer(Enum.at(fields, 11)) + String.to_integer(Enum.at(fields, 12))

          {all + ticks,
           if(String.contains?(comm, "elixir_scope_wo"), do: workers + ticks, else: workers)}

        _ ->
          {all, workers}
      end
    end)
  end

  def rss_mb do
    [kb] =
      Regex.run(~r/VmRSS:\s+(\d+) kB/, File.read!("/proc/self/status"), capture: :all_but_first)

    String.to_integer(kb) / 1024
  end

  # Samples Layer 2 memory and RSS every 100 ms until told to stop.
  def sampler(name) do
    parent = self()

    spawn_link(fn ->
      loop = fn loop, peak ->
        receive do
          :stop -> send(parent, {:peaks, peak})
        after
          100 ->
            s = ElixirScope.stats(pipeline: name)

            loop.(
              loop,
              {max(elem(peak, 0), s.memory_bytes / 1_048_576), max(elem(peak, 1), rss_mb())}
            )
        end
      end

      loop.(loop, {0.0, 0.0})
    end)
  end

  # Runs one paced phase on a fresh pipeline; returns its figures.
  def phase(rate, seconds, producers) do
    name = pipeline()
    sampler = sampler(name)
    {cpu0, workers0} = cpu_ticks()
    t0 = System.monotonic_time(:microsecond)
    sent = produce(name, rate, seconds, producers)
    :ok = ElixirScope.flush(60_000, pipeline: name)
    wall_s = (System.monotonic_time(:microsecond) - t0) / 1.0e6
    {cpu1, workers1} = cpu_ticks()
    send(sampler, :stop)
    peaks = receive do: ({:peaks, p} -> p)
    p = Native.pipeline_stats(PipelineManager.pipeline(name))
    GenServer.stop(name)
    hz = 100
    cores = System.schedulers_online()
    pct = fn ticks -> Float.round(100 * ticks / hz / wall_s / cores, 1) end

    %{
      rate: rate,
      sent: sent,
      per_second: round(p.stored / wall_s),
      p50: p.latency_ns.p50 / 1.0e6,
      p95: p.latency_ns.p95 / 1.0e6,
      p99: p.latency_ns.p99 / 1.0e6,
      dropped: p.dropped,
      dropped_total: p.dropped_total,
      layer2_mb: Float.round(elem(peaks, 0), 1),
      rss_mb: Float.round(elem(peaks, 1), 1),
      cpu_workers: pct.(workers1 - workers0),
      cpu_vm: pct.(cpu1 - cpu0)
    }
  end

  def print(label, r) do
    ms = fn v -> :erlang.float_to_binary(v, decimals: 3) end

    IO.puts("""
    #{label}
      stored #{r.per_second} events/s (asked #{r.rate}/s, sent #{r.sent}); ring->store p50 #{ms.(r.p50)} ms, p95 #{ms.(r.p95)} ms, p99 #{ms.(r.p99)} ms
      dropped #{r.dropped_total} #{inspect(r.dropped)}
      peak Layer 2 memory #{r.layer2_mb} MB (VM RSS #{r.rss_mb} MB); CPU of the machine: workers #{r.cpu_workers}%, whole VM #{r.cpu_vm}%\
    """)
  end
end

seconds = LoadBench.env_int("BENCH_LOAD_SECONDS", 30)
ramp_seconds = LoadBench.env_int("BENCH_RAMP_SECONDS", 3)

IO.puts(
  "Load benchmark: #{System.schedulers_online()} schedulers, OTP #{System.otp_release()}, default config, #{seconds} s phases\n"
)

sustained = LoadBench.phase(10_000, seconds, 1)
LoadBench.print("10k events/s sustained (targets: 0 drops, p99 <= 5 ms, CPU <= 20%)", sustained)
burst = LoadBench.phase(50_000, seconds, 1)

LoadBench.print(
  "50k events/s burst (targets: 0 drops, p99 <= 5 ms, Layer 2 memory <= 500 MB)",
  burst
)

IO.puts(
  "ramp (#{ramp_seconds} s steps: the rate doubles until events drop, then bisects 3 times):"
)

step = fn rate ->
  r = LoadBench.phase(rate, ramp_seconds, 2)
  held = r.dropped_total == 0 and r.per_second >= 0.9 * rate

  IO.puts(
    "  asked #{rate}/s: stored #{r.per_second}/s, dropped #{r.dropped_total}, p99 #{Float.round(r.p99, 3)} ms" <>
      if(held, do: "", else: "  <- not held")
  )

  {held, r}
end

{best, failed} =
  Stream.iterate(100_000, &(&1 * 2))
  |> Enum.reduce_while({nil, nil}, fn rate, {best, _} ->
    case step.(rate) do
      {true, r} when rate < 16_000_000 -> {:cont, {r, nil}}
      {true, r} -> {:halt, {r, nil}}
      {false, _} -> {:halt, {best, rate}}
    end
  end)

best =
  if best && failed do
    Enum.reduce(1..3, {best, failed}, fn _, {best, failed} ->
      mid = div(best.rate + failed, 2)

      case step.(mid) do
        {true, r} -> {r, failed}
        {false, _} -> {best, mid}
      end
    end)
    |> elem(0)
  else
    best
  end

case best do
  nil -> IO.puts("highest zero-drop rate: below 100000 events/s")
  r -> IO.puts("highest zero-drop rate held: #{r.per_second} events/s (target >= 1000000)")
end
