defmodule ElixirScope.NativeLogTest do
  use ExUnit.Case

  alias ElixirScope.Capture.{BackpressureManager, PipelineManager}
  alias ElixirScope.{Native, NativeLog}
  import ElixirScope.TestEvents

  test "native breaker trips and shedding reach Logger, with their fields as metadata" do
    p = private_pipeline(storage: [circuit_breaker_threshold: 1, circuit_breaker_timeout_ms: 50])
    handle = PipelineManager.pipeline(p)

    log =
      ExUnit.CaptureLog.capture_log([level: :info, metadata: [:trips, :fraction]], fn ->
        :ok = Native.pipeline_inject_fault(handle, {:fail, 1})
        {:ok, _} = ElixirScope.ingest(call(), pipeline: p)
        eventually(fn -> Native.pipeline_stats(handle).circuit_breaker.trips == 1 end)
        :ok = BackpressureManager.enable_load_shedding(p)
        :ok = BackpressureManager.disable_load_shedding(p)
        # The process drains every 100 ms; flush/0 drains what is left now.
        Process.sleep(150)
        NativeLog.flush()
      end)

    assert log =~ ~r/\[warning\].*elixir_scope: store circuit breaker opened/
    assert log =~ "trips=1"
    assert log =~ ~r/\[warning\].*elixir_scope: load shedding started/
    assert log =~ "fraction=0.5"
    assert log =~ ~r/\[info\].*elixir_scope: load shedding stopped/
  end

  test "pressure changes are logged once per rise and when back to normal" do
    log =
      ExUnit.CaptureLog.capture_log([level: :info], fn ->
        p = private_pipeline(backpressure: [check_interval_ms: 10, memory_limit_mb: 1])
        eventually(fn -> BackpressureManager.check_pressure(p) == :critical end)
        Process.sleep(100)
        :ok = PipelineManager.update_config(p, backpressure: [memory_limit_mb: 100_000])
        eventually(fn -> BackpressureManager.check_pressure(p) == :normal end)
        Process.sleep(50)
      end)

    assert [_] = Regex.scan(~r/\[warning\].*elixir_scope: pressure critical/, log)
    assert log =~ ~r/\[info\].*elixir_scope: pressure back to normal \(peak critical\)/
  end
end
