# Analysis benchmark (issue 14). Run: ./setup.sh bench-analysis
#   (or MIX_ENV=prod mix run bench/analysis.exs)
# Env: BENCH_ANALYSIS_CALLS (traced calls, default 500_000 = 1M events).
#
# One process is traced on the default config while it calls a function in
# a loop (1% of the calls go to another function). Baseline: the same trace
# records in an ETS table as erlang_doctor (tr) keeps them,
# {index, pid, :call | :return, mfa, data, timestamp}, queried as tr does:
# call_stat by an Elixir fold over the table with a stack per process, and
# a selection by :ets.select with a match spec; saved by :ets.tab2file and
# loaded by :ets.file2tab. Medians of 5.
alias ElixirScope.Capture.PipelineManager
alias ElixirScope.Query

Logger.configure(level: :error)

defmodule AnalysisBench.Work do
  def common(n), do: n + 1
  def rare(n), do: n - 1

  def loop(0), do: :ok

  def loop(n) do
    if rem(n, 100) == 0, do: rare(n), else: common(n)
    loop(n - 1)
  end
end

defmodule AnalysisBench do
  alias AnalysisBench.Work

  def median(xs), do: xs |> Enum.sort() |> Enum.at(div(length(xs), 2))
  def time_us(fun), do: fun |> :timer.tc() |> elem(0)
  def med_us(fun), do: median(for _ <- 1..5, do: time_us(fun))

  def trace(p, calls) do
    me = self()
    pid = spawn(fn -> receive(do: (:go -> Work.loop(calls) && send(me, :done))) end)

    {:ok, s} =
      ElixirScope.trace(
        pids: pid,
        calls: [{Work, :common, 1}, {Work, :rare, 1}],
        pipeline: p,
        max_events: 4 * calls,
        duration_ms: 600_000
      )

    send(pid, :go)
    receive do: (:done -> :ok)
    {:ok, info} = ElixirScope.stop_trace(s)
    :ok = ElixirScope.flush(60_000, pipeline: p)
    info
  end

  # The trace as tr keeps it.
  def ets_copy(p) do
    tab = :ets.new(:tr_like, [:ordered_set, :public])

    Query.stream([], pipeline: p)
    |> Stream.each(fn e ->
      ev = e.event
      kind = if ev.type == :function_call, do: :call, else: :return

      :ets.insert(
        tab,
        {ev.id, ev.pid, kind, {ev.module, ev.function, ev.arity}, ev.data, ev.timestamp}
      )
    end)
    |> Stream.run()

    tab
  end

  # tr's call_stat: a fold over the table, a stack per process (and, per
  # process, the calls each mfa has open, so recursion is found in O(1)).
  def ets_call_stat(tab) do
    {_, stats} =
      :ets.foldl(
        fn
          {_, pid, :call, mfa, _, ts}, {stacks, stats} ->
            {stack, open} = Map.get(stacks, pid, {[], %{}})
            nested = Map.get(open, mfa, 0) > 0
            open = Map.update(open, mfa, 1, &(&1 + 1))
            {Map.put(stacks, pid, {[{mfa, ts, 0, nested} | stack], open}), stats}

          {_, pid, :return, _, _, ts}, {stacks, stats} ->
            case Map.get(stacks, pid, {[], %{}}) do
              {[{mfa, at, children, nested} | rest], open} ->
                took = ts - at

                rest =
                  case rest do
                    [{m, a, c, n} | more] -> [{m, a, c + took, n} | more]
                    [] -> []
                  end

                {n, acc, own} = Map.get(stats, mfa, {0, 0, 0})
                acc = if nested, do: acc, else: acc + took
                open = Map.update!(open, mfa, &(&1 - 1))
                stats = Map.put(stats, mfa, {n + 1, acc, own + took - children})
                {Map.put(stacks, pid, {rest, open}), stats}

              _ ->
                {stacks, stats}
            end
        end,
        {%{}, %{}},
        tab
      )

    stats
  end

  # tr's ranges/tracebacks: one fold over the table with a stack per
  # process, collecting, for the first `n` calls of `mfa`, the records from
  # the call to its return (ranges) or the open calls when it is called
  # (tracebacks).
  def ets_ranges(tab, mfa, n) do
    {_, _, done, _} =
      :ets.foldl(
        fn
          _, {_, _, _, count} = acc when count >= n ->
            acc

          {_, pid, kind, m, _, _} = rec, {open, depths, done, count} ->
            depth = Map.get(depths, pid, 0) + if(kind == :call, do: 1, else: 0)

            open =
              for {start, {p, d, recs}} <- open,
                  into: %{},
                  do: {start, {p, d, if(p == pid, do: [rec | recs], else: recs)}}

            open =
              if kind == :call and m == mfa,
                do: Map.put(open, elem(rec, 0), {pid, depth, [rec]}),
                else: open

            {closed, open} =
              if kind == :return do
                {closed, open} =
                  Enum.split_with(open, fn {_, {p, d, _}} -> p == pid and d == depth end)

                {closed, Map.new(open)}
              else
                {[], open}
              end

            depth = if kind == :return, do: depth - 1, else: depth

            done =
              Enum.reduce(closed, done, fn {_, {_, _, recs}}, acc ->
                [Enum.reverse(recs) | acc]
              end)

            {open, Map.put(depths, pid, depth), done, count + length(closed)}
        end,
        {%{}, %{}, [], 0},
        tab
      )

    done |> Enum.reverse() |> Enum.take(n)
  end

  def ets_tracebacks(tab, mfa, n) do
    {_, found, _} =
      :ets.foldl(
        fn
          _, {_, _, count} = acc when count >= n ->
            acc

          {_, pid, :call, m, _, _} = rec, {stacks, found, count} ->
            stack = [rec | Map.get(stacks, pid, [])]

            if m == mfa,
              do: {Map.put(stacks, pid, stack), [Enum.reverse(stack) | found], count + 1},
              else: {Map.put(stacks, pid, stack), found, count}

          {_, pid, :return, _, _, _}, {stacks, found, count} ->
            {Map.update(stacks, pid, [], &Enum.drop(&1, 1)), found, count}
        end,
        {%{}, [], 0},
        tab
      )

    Enum.reverse(found)
  end
end

calls = String.to_integer(System.get_env("BENCH_ANALYSIS_CALLS", "500000"))
name = :analysis_bench
{:ok, _} = PipelineManager.start_link(name: name, store: :private, config: [])
info = AnalysisBench.trace(name, calls)
stored = ElixirScope.stats(pipeline: name).retained
tab = AnalysisBench.ets_copy(name)

IO.puts(
  "analysis bench — #{System.schedulers_online()} schedulers, OTP #{System.otp_release()}; " <>
    "traced #{info.events} events (dropped #{info.dropped}), #{stored} stored, same records in ETS\n"
)

ours = AnalysisBench.med_us(fn -> Query.call_stat(:mfa, pipeline: name) end)
theirs = AnalysisBench.med_us(fn -> AnalysisBench.ets_call_stat(tab) end)
stat = Query.call_stat(:mfa, pipeline: name)
{n, _, _} = AnalysisBench.ets_call_stat(tab) |> Map.fetch!({AnalysisBench.Work, :common, 1})
true = stat[{AnalysisBench.Work, :common, 1}].count == n

IO.puts(
  "call_stat(:mfa) over #{stored} events: #{Float.round(ours / 1000, 1)} ms; " <>
    "tr's fold over ETS #{Float.round(theirs / 1000, 1)} ms -> #{Float.round(theirs / ours, 1)}x (target >= 10x)"
)

rare = {AnalysisBench.Work, :rare, :_}
match_spec = [{{:_, :_, :_, {AnalysisBench.Work, :rare, :_}, :_, :_}, [], [:"$_"]}]
ours = AnalysisBench.med_us(fn -> Query.select([mfa: rare], pipeline: name) end)
theirs = AnalysisBench.med_us(fn -> :ets.select(tab, match_spec) end)
k = length(Query.select([mfa: rare], pipeline: name))
^k = length(:ets.select(tab, match_spec))

IO.puts(
  "select(mfa: rare) returning #{k} of #{stored} (#{Float.round(100 * k / stored, 1)}%): " <>
    "#{Float.round(ours / 1000, 1)} ms as %CorrelatedEvent{}s; :ets.select #{Float.round(theirs / 1000, 1)} ms " <>
    "-> #{Float.round(ours / theirs, 2)}x its time (target <= 1x)"
)

rare_mfa = {AnalysisBench.Work, :rare, 1}
ours = AnalysisBench.med_us(fn -> Query.ranges([mfa: rare_mfa, limit: 1000], pipeline: name) end)
theirs = AnalysisBench.med_us(fn -> AnalysisBench.ets_ranges(tab, rare_mfa, 1000) end)
1000 = length(Query.ranges([mfa: rare_mfa, limit: 1000], pipeline: name))
1000 = length(AnalysisBench.ets_ranges(tab, rare_mfa, 1000))

IO.puts(
  "ranges for 1000 matching calls: #{Float.round(ours / 1000, 1)} ms; the same by a fold over ETS " <>
    "#{Float.round(theirs / 1000, 1)} ms -> #{Float.round(theirs / ours, 1)}x (target >= 5x)"
)

tb = fn ->
  Query.tracebacks([mfa: rare_mfa, type: :function_call],
    output: :all,
    limit: 1000,
    pipeline: name
  )
end

ours = AnalysisBench.med_us(tb)
theirs = AnalysisBench.med_us(fn -> AnalysisBench.ets_tracebacks(tab, rare_mfa, 1000) end)
1000 = length(tb.())

IO.puts(
  "tracebacks for 1000 matching calls: #{Float.round(ours / 1000, 1)} ms; the same by a fold over ETS " <>
    "#{Float.round(theirs / 1000, 1)} ms -> #{Float.round(theirs / ours, 1)}x (target >= 5x)"
)

# save / load of the whole trace against :ets.tab2file / :ets.file2tab of the ETS copy.
ours_file = Path.join(System.tmp_dir!(), "analysis_bench.estrace")
ets_file = Path.join(System.tmp_dir!(), "analysis_bench.ets") |> String.to_charlist()

save_us =
  AnalysisBench.med_us(fn -> {:ok, _} = ElixirScope.save(ours_file, [], pipeline: name) end)

tab2file_us = AnalysisBench.med_us(fn -> :ok = :ets.tab2file(tab, ets_file) end)

load_us =
  AnalysisBench.med_us(fn ->
    {:ok, %{events: ^stored, lost: 0}} = ElixirScope.load(ours_file)
    :erlang.garbage_collect()
  end)

file2tab_us =
  AnalysisBench.med_us(fn ->
    {:ok, t} = :ets.file2tab(ets_file)
    :ets.delete(t)
  end)

{:ok, loaded} = ElixirScope.load(ours_file)
true = Query.call_stat(:mfa, store: loaded) == stat
ours_size = File.stat!(ours_file).size
ets_size = File.stat!(ets_file).size

IO.puts(
  "save of #{stored} events: #{Float.round(save_us / 1000, 1)} ms; :ets.tab2file #{Float.round(tab2file_us / 1000, 1)} ms " <>
    "-> #{Float.round(tab2file_us / save_us, 1)}x (target >= 3x)\n" <>
    "load: #{Float.round(load_us / 1000, 1)} ms; :ets.file2tab #{Float.round(file2tab_us / 1000, 1)} ms " <>
    "-> #{Float.round(file2tab_us / load_us, 1)}x (target >= 3x); the loaded store's call_stat equals the original's\n" <>
    "file: #{ours_size} bytes; tab2file's #{ets_size} -> #{Float.round(ours_size / ets_size, 3)} of its size (target <= 0.25)"
)

File.rm(ours_file)
File.rm(ets_file)

# Chrome trace of 100k events (the first 100k ids), checked with Python's json module.
first = Query.select([limit: 1], pipeline: name) |> hd()
window = [before: first.event.id + 100_000]
path = Path.join(System.tmp_dir!(), "analysis_bench_trace.json")
us = AnalysisBench.med_us(fn -> ElixirScope.Export.chrome_trace(window, path, pipeline: name) end)
checker = Path.expand("../test/support/json_check.py", __DIR__)
{out, 0} = System.cmd("python3", [checker, "chrome", path])
["ok", begins | _] = String.split(out)

IO.puts(
  "chrome_trace of 100000 events: #{Float.round(us / 1000, 1)} ms (target <= 1000), " <>
    "#{File.stat!(path).size} bytes; JSON reads back, all #{begins} calls end on their track"
)

File.rm(path)
