defmodule ElixirScope.ExportTest do
  use ExUnit.Case

  alias ElixirScope.{Export, Query, Traced}

  @checker Path.expand("../support/json_check.py", __DIR__)

  defp check(kind, content) do
    path = Path.join(System.tmp_dir!(), "es_export_#{System.unique_integer([:positive])}")
    File.write!(path, content)
    on_exit(fn -> File.rm(path) end)
    {out, status} = System.cmd("python3", [@checker, kind, path], stderr_to_stdout: true)
    assert status == 0, out
    out |> String.split() |> tl() |> Enum.map(&String.to_integer/1)
  end

  test "chrome_trace: valid JSON, every call ends on its track, messages as paired flows" do
    {p, _server, _client} = Traced.bank_with_fib()
    opts = [pipeline: p]
    trace = Export.chrome_trace([], :binary, opts)
    [begins, paired, flows] = check("chrome", trace)
    assert begins == length(Query.select([type: :function_call], opts))
    receives = Query.select([type: :message_receive], opts)
    linked = Enum.count(receives, &Enum.any?(&1.links, fn {k, _} -> k == :receives end))
    assert paired == linked and flows >= paired

    path = Path.join(System.tmp_dir!(), "es_chrome_#{System.unique_integer([:positive])}.json")
    on_exit(fn -> File.rm(path) end)
    assert Export.chrome_trace([pid: self()], path, opts) == :ok
    assert [0, 0, 0] = check("chrome", File.read!(path))
  end

  test "folded_stacks add up to the calls' count and own time" do
    {p, _server, client} = Traced.bank_with_fib()
    opts = [pipeline: p]
    fib = [mfa: {Traced.Fib, :fib, 1}]
    counts = Export.folded_stacks(fib, [weight: :count] ++ opts)
    lines = String.split(counts, "\n", trim: true)
    weight = fn line -> line |> String.split(" ") |> List.last() |> String.to_integer() end
    assert lines |> Enum.map(weight) |> Enum.sum() == 15, "fib(5) makes 15 calls"

    assert Enum.all?(
             lines,
             &String.starts_with?(&1, inspect(client) <> ";ElixirScope.Traced.Fib:fib/1")
           )

    deepest = Enum.max_by(lines, &length(String.split(&1, ";")))
    assert length(String.split(deepest, ";")) == 1 + 5, "fib(5) -> fib(1): five frames"

    own = Export.folded_stacks(fib, opts) |> String.split("\n", trim: true) |> Enum.map(weight)
    %{{Traced.Fib, :fib, 1} => stat} = Query.call_stat(:mfa, fib ++ opts)
    assert_in_delta Enum.sum(own), div(stat.own_time, 1000), length(own)
    assert_raise ArgumentError, fn -> Export.folded_stacks([], weight: :bytes) end
  end

  test "mermaid_sequence shows GenServer calls, replies and casts as such" do
    {p, _server, _client} = Traced.bank_with_fib()
    diagram = Export.mermaid_sequence([], pipeline: p)
    assert diagram =~ ~r/^sequenceDiagram\n/
    assert length(Regex.scan(~r/P\d->>P\d: call :bump/, diagram)) == 3
    assert diagram =~ ~r/P\d-->>P\d: reply 1/
    assert diagram =~ ~r/P\d-->>P\d: reply 3/
    assert diagram =~ "participant P1 as"
  end

  test "jsonl writes one JSON object per event" do
    {p, _server, _client} = Traced.bank_with_fib()
    path = Path.join(System.tmp_dir!(), "es_events_#{System.unique_integer([:positive])}.jsonl")
    on_exit(fn -> File.rm(path) end)
    total = length(Query.select([], pipeline: p))
    assert Export.jsonl([], path, pipeline: p) == {:ok, total}
    assert check("jsonl", File.read!(path)) == [total]
  end

  test "call_tree renders a call across processes; print_call_tree prints it" do
    {p, _server, client} = Traced.bank_with_fib()
    [bump | _] = Query.select([mfa: {Traced.Client, :bump, 1}, type: :function_call], pipeline: p)
    tree = Export.call_tree(bump.event.id, pipeline: p)
    [first | rest] = String.split(tree, "\n", trim: true)
    assert first =~ "ElixirScope.Traced.Client.bump(" and first =~ "→ 1"
    assert String.starts_with?(first, inspect(client))
    assert Enum.any?(rest, &(&1 =~ "send →" and &1 =~ "call :bump"))
    assert Enum.any?(rest, &(&1 =~ "ElixirScope.Traced.Counter.handle_call(:bump"))
    assert Enum.any?(rest, &(&1 =~ "state 0 ⇒ 1"))

    out =
      ExUnit.CaptureIO.capture_io(fn ->
        ElixirScope.print_call_tree(bump.event.id, pipeline: p)
      end)

    assert out == tree
    assert_raise ArgumentError, fn -> Export.call_tree(10_000_000, pipeline: p) end
  end
end
