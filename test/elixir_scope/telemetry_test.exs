defmodule ElixirScope.TelemetryTest do
  use ExUnit.Case, async: true

  alias ElixirScope.Capture.{BackpressureManager, PipelineManager}
  alias ElixirScope.Metrics.Layer2, as: Metrics
  import ElixirScope.TestEvents

  setup do
    ElixirScope.TestTelemetry.listen()
    :ok
  end

  defp event(p, name, timeout \\ 2_000) do
    receive do
      {:telemetry, ^name, measurements, %{pipeline: ^p} = meta} -> {measurements, meta}
    after
      timeout -> flunk("no #{inspect(name)} event for #{inspect(p)}")
    end
  end

  test "each pipeline emits throughput, latency and health every emit_interval_ms" do
    p = private_pipeline(metrics: [emit_interval_ms: 20], backpressure: [check_interval_ms: 10])

    {:ok, 1_000} =
      ElixirScope.ingest_batch(for(i <- 1..1_000, do: call(self(), [i])), pipeline: p)

    :ok = ElixirScope.flush(5_000, pipeline: p)

    Enum.find_value(1..100, fn _ ->
      {m, _} = event(p, [:elixir_scope, :layer2, :throughput])
      m.events_per_second > 0 and m
    end)

    {latency, _} = event(p, [:elixir_scope, :layer2, :latency])
    assert latency.p50 >= 0 and latency.p99 >= latency.p50
    {health, _} = event(p, [:elixir_scope, :layer2, :health])
    assert %{buffer_utilization: u, correlation_success_rate: 1.0, worker_utilization: w} = health
    assert u >= 0.0 and u <= 1.0 and w >= 0.0 and w <= 1.0
  end

  test "emit_metrics/1 emits once on demand; emit_interval_ms: 0 emits nothing by itself" do
    p = private_pipeline(metrics: [emit_interval_ms: 0])
    refute_receive {:telemetry, [:elixir_scope, :layer2, :throughput], _, %{pipeline: ^p}}, 100
    :ok = Metrics.emit_metrics(p)

    for name <- [:throughput, :latency, :health],
        do: event(p, [:elixir_scope, :layer2, name], 100)

    refute_receive {:telemetry, [:elixir_scope, :layer2, _], _, %{pipeline: ^p}}, 100
    :ok = PipelineManager.update_config(p, metrics: [emit_interval_ms: 10])
    event(p, [:elixir_scope, :layer2, :throughput])
  end

  test "pressure changes and automatic shedding are events" do
    p =
      private_pipeline(
        backpressure: [check_interval_ms: 10, memory_limit_mb: 1, shed_after_checks: 2]
      )

    {inputs, meta} = event(p, [:elixir_scope, :layer2, :pressure])
    assert %{from: :normal, to: :critical} = meta
    assert inputs.memory_ratio > 0.9

    assert {%{fraction: 0.5}, %{state: :started, mode: :auto}} =
             event(p, [:elixir_scope, :layer2, :shedding])

    :ok = PipelineManager.update_config(p, backpressure: [memory_limit_mb: 100_000])
    assert {_, %{from: :critical, to: :normal}} = event(p, [:elixir_scope, :layer2, :pressure])

    assert {%{fraction: 0.0}, %{state: :stopped, mode: :auto}} =
             event(p, [:elixir_scope, :layer2, :shedding])

    :ok = BackpressureManager.enable_load_shedding(p)
    assert {_, %{state: :started, mode: :manual}} = event(p, [:elixir_scope, :layer2, :shedding])
  end

  test "the circuit breaker opening and closing are events" do
    p =
      private_pipeline(
        backpressure: [check_interval_ms: 10],
        storage: [circuit_breaker_threshold: 1, circuit_breaker_timeout_ms: 50]
      )

    :ok = ElixirScope.Native.pipeline_inject_fault(PipelineManager.pipeline(p), {:fail, 1})
    {:ok, _} = ElixirScope.ingest(call(), pipeline: p)
    assert {%{trips: 1}, %{state: :opened}} = event(p, [:elixir_scope, :layer2, :breaker])
    assert {%{trips: 1}, %{state: :closed}} = event(p, [:elixir_scope, :layer2, :breaker])
  end

  test "a trace session's end is an event with its reason and counters" do
    p = private_pipeline()
    traced = spawn(fn -> receive(do: (:go -> for(_ <- 1..100, do: send(self(), :x)))) end)
    {:ok, session} = ElixirScope.trace(pids: traced, messages: true, max_events: 10, pipeline: p)
    send(traced, :go)

    assert {%{events: 10, dropped: 0, duration_ms: ms}, %{reason: :max_events, session: ^session}} =
             event(p, [:elixir_scope, :trace, :stop])

    assert ms >= 0
  end
end
