# Tracer benchmark. Run: ./setup.sh bench-tracer  (or MIX_ENV=prod mix run bench/tracer.exs)
# Env: BENCH_TRACE_CALLS (traced calls per run, default 500_000),
#      BENCH_TRACE_ROUNDS (ping-pong round trips per run, default 200_000).
#
# One workload, five ways taking turns over 9 rounds, medians:
#   untraced      the loop alone
#   floor         a NIF tracer whose callback only counts (the VM's own cost
#                 of the same trace flags and match specs)
#   elixir_scope  ElixirScope.trace/1 into a pipeline (capture = while the
#                 traced code runs; stored = until flush returns)
#   classic       a tracer process that writes each trace message to ETS
#   dbg           :dbg with a process handler that counts
# Workloads: a tight loop of calls to a traced function (call + return_from
# per call) and a message ping-pong between two traced processes (send +
# receive on each side per message).
# Every traced way gets the match specs a session installs, so the VM does
# the same work under each: return tracking on calls, the sender handed
# over with each receive. Our overhead over the floor is the median of the
# per-round differences of floor and capture, run back to back (in
# alternating order), so that each difference sees the machine in one state.
alias ElixirScope.Capture.PipelineManager

# Pipelines are driven into pressure on purpose here: keep their logs out
# of the figures.
Logger.configure(level: :error)
alias ElixirScope.Native

defmodule TracerBench.Work do
  def step(n), do: n - 1

  def loop(0), do: :ok
  def loop(n), do: loop(step(n))
end

defmodule TracerBench do
  alias TracerBench.Work

  # As ElixirScope.Tracer.Server sets them.
  @call_match_spec ElixirScope.Tracer.Server.match_specs().call
  @receive_match_spec ElixirScope.Tracer.Server.match_specs().receive

  def env_int(name, default), do: String.to_integer(System.get_env(name, to_string(default)))
  def median(xs), do: xs |> Enum.sort() |> Enum.at(div(length(xs), 2))

  # A workload: processes that wait for :go, run, and report :done.
  def calls(n) do
    me = self()
    pid = spawn(fn -> receive(do: (:go -> Work.loop(n) && send(me, :done))) end)
    %{pids: [pid], events: 2 * n, calls?: true, starter: pid}
  end

  def ping_pong(rounds) do
    me = self()

    pong =
      spawn(fn ->
        pong = fn pong ->
          receive do
            {:ping, from} ->
              send(from, :pong)
              pong.(pong)

            :stop ->
              :ok
          end
        end

        pong.(pong)
      end)

    ping =
      spawn(fn ->
        receive do
          :go ->
            for _ <- 1..rounds do
              send(pong, {:ping, self()})
              receive do: (:pong -> :ok)
            end

            send(pong, :stop)
            send(me, :done)
        end
      end)

    # Besides the rounds: :go and :stop received, :stop and :done sent.
    %{pids: [ping, pong], events: 4 * rounds + 4, calls?: false, starter: ping}
  end

  def flags(w), do: if(w.calls?, do: [:call], else: [:send, :receive])

  # Off restores the VM's defaults: no call pattern, every receive traced.
  def set_pattern(%{calls?: true}, on),
    do: :erlang.trace_pattern({Work, :step, 1}, on && @call_match_spec, [:local])

  def set_pattern(%{calls?: false}, on),
    do: :erlang.trace_pattern(:receive, (on && @receive_match_spec) || true, [])

  # Runs the workload; returns its wall time in us.
  def run(w) do
    t0 = System.monotonic_time(:microsecond)
    send(w.starter, :go)
    receive do: (:done -> :ok)
    System.monotonic_time(:microsecond) - t0
  end

  def untraced(build), do: run(build.())

  def floor(build, pipeline) do
    w = build.()

    ref =
      Native.trace_session_new(PipelineManager.pipeline(pipeline), self(), %{
        max_events: 1_000_000_000_000,
        rate_events: 0,
        rate_window_ms: 0,
        duration_ms: 3_600_000,
        payload_bytes: nil,
        excluded: [],
        servers: [],
        count_only: true
      })

    set_pattern(w, true)
    for p <- w.pids, do: :erlang.trace(p, true, [{:tracer, Native, ref} | flags(w)])
    us = run(w)
    set_pattern(w, false)
    counted = Native.trace_session_info(ref).events
    if counted != w.events, do: IO.puts("  floor counted #{counted} of #{w.events}")
    us
  end

  def elixir_scope(build, pipeline) do
    w = build.()

    opts = [
      pids: w.pids,
      pipeline: pipeline,
      max_events: 1_000_000_000_000,
      duration_ms: 3_600_000
    ]

    opts =
      if w.calls?,
        do: [{:calls, [{Work, :step, 1}]} | opts],
        else: [messages: true] ++ opts

    {:ok, session} = ElixirScope.trace(opts)
    t0 = System.monotonic_time(:microsecond)
    us = run(w)
    :ok = ElixirScope.flush(60_000, pipeline: pipeline)
    stored_us = System.monotonic_time(:microsecond) - t0
    {:ok, info} = ElixirScope.stop_trace(session)

    if info.events + info.dropped != w.events,
      do: IO.puts("  elixir_scope saw #{info.events + info.dropped} of #{w.events} events")

    {us, stored_us, info.dropped}
  end

  def classic(build) do
    w = build.()
    me = self()
    target = w.events

    tracer =
      spawn(fn ->
        tab = :ets.new(:classic, [:set, :private])

        loop = fn loop, i ->
          receive do
            msg ->
              :ets.insert(tab, {i, msg})
              if i + 1 == target, do: send(me, :tracer_done), else: loop.(loop, i + 1)
          end
        end

        loop.(loop, 0)
      end)

    set_pattern(w, true)
    for p <- w.pids, do: :erlang.trace(p, true, [{:tracer, tracer} | flags(w)])
    t0 = System.monotonic_time(:microsecond)
    run(w)
    receive do: (:tracer_done -> :ok)
    us = System.monotonic_time(:microsecond) - t0
    set_pattern(w, false)
    Process.exit(tracer, :kill)
    us
  end

  def with_dbg(build) do
    w = build.()
    me = self()
    target = w.events

    handler = fn
      _msg, n when n + 1 == target ->
        send(me, :dbg_done)
        n + 1

      _msg, n ->
        n + 1
    end

    {:ok, _} = :dbg.tracer(:process, {handler, 0})
    for p <- w.pids, do: {:ok, _} = :dbg.p(p, flags(w))

    if w.calls?,
      do: {:ok, _} = :dbg.tpl(Work, :step, 1, @call_match_spec),
      else: set_pattern(w, true)

    t0 = System.monotonic_time(:microsecond)
    run(w)
    receive do: (:dbg_done -> :ok)
    us = System.monotonic_time(:microsecond) - t0
    :dbg.stop_clear()
    set_pattern(w, false)
    us
  end

  def report(name, build, events, pipeline) do
    rate = fn us -> events / us end
    # The five ways take turns within each of 9 rounds, so a noisy moment
    # of the machine hits them alike; medians per way. Floor and capture
    # run back to back, in alternating order.
    rounds =
      for i <- 1..9 do
        {floor, {capture, stored, dropped}} =
          if rem(i, 2) == 1 do
            ours = elixir_scope(build, pipeline)
            {floor(build, pipeline), ours}
          else
            floor = floor(build, pipeline)
            {floor, elixir_scope(build, pipeline)}
          end

        %{
          untraced: untraced(build),
          floor: floor,
          capture: capture,
          over: capture - floor,
          stored: stored,
          dropped: dropped,
          classic: classic(build),
          dbg: with_dbg(build)
        }
      end

    med = fn key -> median(Enum.map(rounds, & &1[key])) end
    {untraced, floor, capture} = {med.(:untraced), med.(:floor), med.(:capture)}
    {stored, classic, dbg} = {med.(:stored), med.(:classic), med.(:dbg)}
    per_event = fn us -> Float.round(us * 1000 / events, 1) end
    {low, high} = rounds |> Enum.map(& &1.over) |> Enum.min_max()

    IO.puts("\n#{name}: #{events} trace events per run")
    row = fn label, us -> IO.puts(String.pad_trailing(label, 34) <> fmt(us, events)) end
    row.("untraced (loop alone)", untraced)
    row.("floor (NIF callback that counts)", floor)
    drops = Enum.map(rounds, & &1.dropped)
    row.("elixir_scope, captured", capture)

    IO.puts(
      "  elixir_scope dropped #{Enum.sum(drops)} of #{9 * events} events over the 9 rounds " <>
        "(per round: #{Enum.join(drops, ", ")})"
    )

    row.("elixir_scope, stored (after flush)", stored)
    row.("classic tracer process -> ETS", classic)
    row.("dbg, process handler", dbg)

    IO.puts(
      "  elixir_scope over the floor: #{per_event.(med.(:over))} ns/event" <>
        " (rounds: #{per_event.(low)} to #{per_event.(high)});" <>
        " captured vs classic: #{Float.round(rate.(capture) |> then(&(&1 / rate.(classic))), 2)}x" <>
        " (stored vs classic: #{Float.round(rate.(stored) / rate.(classic), 2)}x);" <>
        " vs dbg: #{Float.round(rate.(capture) / rate.(dbg), 2)}x"
    )
  end

  defp fmt(us, events) do
    mps = Float.round(events / us, 2)
    ns = Float.round(us * 1000 / events, 1)
    String.pad_leading("#{mps} M events/s", 18) <> String.pad_leading("#{ns} ns/event", 18)
  end
end

calls = TracerBench.env_int("BENCH_TRACE_CALLS", 500_000)
rounds = TracerBench.env_int("BENCH_TRACE_ROUNDS", 200_000)

name = :tracer_bench

{:ok, _} =
  PipelineManager.start_link(
    name: name,
    store: :private,
    # The default config, as users run it: the workers must keep up with
    # the traced process, with the default rings and store.
    config: []
  )

IO.puts(
  "Tracer benchmark on #{System.schedulers_online()} schedulers, OTP #{System.otp_release()}"
)

TracerBench.report(
  "calls (call + return_from)",
  fn -> TracerBench.calls(calls) end,
  2 * calls,
  name
)

TracerBench.report(
  "ping-pong (send + receive)",
  fn -> TracerBench.ping_pong(rounds) end,
  4 * rounds + 4,
  name
)
