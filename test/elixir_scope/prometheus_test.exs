defmodule ElixirScope.PrometheusTest do
  use ExUnit.Case, async: true

  alias ElixirScope.Capture.PipelineManager
  alias ElixirScope.Metrics.Prometheus
  import ElixirScope.TestEvents

  @parser Path.expand("../support/prometheus_parse.py", __DIR__)

  # The families a real Prometheus parser reads from `text`.
  defp parse(text) do
    path = Path.join(System.tmp_dir!(), "es_prom_#{System.unique_integer([:positive])}.txt")
    File.write!(path, text)
    on_exit(fn -> File.rm(path) end)
    {out, 0} = System.cmd("python3", [@parser, path], stderr_to_stdout: true)

    out
    |> String.split("\n", trim: true)
    |> Enum.reduce([], fn
      "F " <> rest, acc ->
        [name, type, help] = String.split(rest, " ")
        [%{"name" => name, "type" => type, "help" => unhex(help), "samples" => []} | acc]

      "S " <> rest, [family | acc] ->
        [name, value, labels] = String.split(rest, " ")
        sample = [name, labels(labels), String.to_float(value)]
        [%{family | "samples" => family["samples"] ++ [sample]} | acc]
    end)
    |> Map.new(&{&1["name"], &1})
  end

  defp unhex("-"), do: ""
  defp unhex(hex), do: Base.decode16!(hex, case: :lower)

  defp labels("-"), do: %{}

  defp labels(pairs) do
    for pair <- String.split(pairs, ","), into: %{} do
      [k, v] = String.split(pair, "=")
      {k, unhex(v)}
    end
  end

  # A pipeline named with characters label values must escape, with events
  # stored and some dropped.
  defp busy_pipeline do
    name = :"es \"prom\" \\ test\n#{System.unique_integer([:positive])}"

    {:ok, pid} =
      PipelineManager.start_link(
        name: name,
        store: :private,
        config: [capture: [ring_size: 64, shards: 2]]
      )

    Process.unlink(pid)
    on_exit(fn -> if Process.alive?(pid), do: GenServer.stop(pid) end)

    {:ok, queued} =
      ElixirScope.ingest_batch(for(i <- 1..2_000, do: call(self(), [i])), pipeline: name)

    :ok = ElixirScope.flush(5_000, pipeline: name)
    {name, queued}
  end

  test "the text parses with a real Prometheus parser and holds the guide's metrics" do
    {name, queued} = busy_pipeline()
    # Three sends from node b wait here for their receives.
    store = ElixirScope.Storage.DataAccess.store(pipeline: name)
    {[], 0, 0} = ElixirScope.Native.cross_node_link(store, [{:b@h, send_batch(3, 3)}], [], 0)
    families = parse(Prometheus.text(name))
    label = %{"pipeline" => inspect(name)}

    for {family, type} <- [
          {"elixir_scope_layer2_events_processed", "counter"},
          {"elixir_scope_layer2_processing_duration_seconds", "histogram"},
          {"elixir_scope_layer2_correlation_success_rate", "gauge"},
          {"elixir_scope_layer2_worker_pool_size", "gauge"},
          {"elixir_scope_layer2_buffer_utilization_percent", "gauge"},
          {"elixir_scope_layer2_events_dropped", "counter"},
          {"elixir_scope_layer2_store_events", "gauge"},
          {"elixir_scope_layer2_store_bytes", "gauge"},
          {"elixir_scope_layer2_pressure_level", "gauge"},
          {"elixir_scope_trace_sessions", "gauge"},
          {"elixir_scope_cross_node_linked", "counter"},
          {"elixir_scope_cross_node_waiting", "gauge"},
          {"elixir_scope_cross_node_dropped", "counter"},
          {"elixir_scope_cross_node_busy_seconds", "counter"}
        ] do
      assert %{"type" => ^type, "help" => help} = families[family], family
      assert help != ""
    end

    value = fn family, sample, labels ->
      Enum.find_value(families[family]["samples"], fn [n, l, v] ->
        n == sample and l == labels and v
      end)
    end

    assert value.(
             "elixir_scope_layer2_events_processed",
             "elixir_scope_layer2_events_processed_total",
             label
           ) == queued

    assert value.(
             "elixir_scope_layer2_events_dropped",
             "elixir_scope_layer2_events_dropped_total",
             Map.put(label, "cause", "buffer_full")
           ) == 2_000 - queued

    assert value.("elixir_scope_layer2_store_events", "elixir_scope_layer2_store_events", label) ==
             queued

    h = "elixir_scope_layer2_processing_duration_seconds"
    bucket = h <> "_bucket"
    buckets = for [^bucket, %{"le" => le}, v] <- families[h]["samples"], do: {le, v}
    counts = Enum.map(buckets, &elem(&1, 1))
    assert counts == Enum.sort(counts), "cumulative"
    assert {"+Inf", queued} == List.last(buckets)
    assert value.(h, h <> "_count", label) == queued
    assert value.(h, h <> "_sum", label) > 0

    w = "elixir_scope_cross_node_waiting"
    assert value.(w, w, Map.put(label, "half", "sends")) == 3
    assert value.(w, w, Map.put(label, "half", "receives")) == 0
    b = "elixir_scope_cross_node_busy_seconds"
    assert value.(b, b <> "_total", label) > 0
  end

  test "serve/1 answers GET /metrics over HTTP with the exposition content type" do
    {name, queued} = busy_pipeline()
    {:ok, port} = Prometheus.serve(port: 0, pipeline: name)
    on_exit(fn -> Prometheus.stop(port) end)
    url = ~c"http://127.0.0.1:#{port}/metrics"
    {:ok, {{_, 200, _}, headers, body}} = :httpc.request(:get, {url, []}, [], [])
    assert {~c"content-type", ~c"text/plain; version=0.0.4"} in headers
    assert to_string(body) =~ "elixir_scope_layer2_events_processed_total{pipeline="
    assert to_string(body) =~ ~r/_events_processed_total\{[^}]*\} #{queued}\n/

    {:ok, {{_, 404, _}, _, _}} =
      :httpc.request(:get, {~c"http://127.0.0.1:#{port}/other", []}, [], [])

    assert Prometheus.stop(port) == :ok
    assert Prometheus.stop(port) == {:error, :not_serving}
    assert_raise ArgumentError, fn -> Prometheus.serve(port: -1) end
  end

  test "label values are escaped" do
    assert Prometheus.escape(~s(a"b\\c\nd)) == ~s(a\\"b\\\\c\\nd)
  end
end
