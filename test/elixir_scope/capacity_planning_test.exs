defmodule ElixirScope.CapacityPlanningTest do
  use ExUnit.Case

  alias ElixirScope.CapacityPlanning

  setup do
    on_exit(fn -> :persistent_term.erase({CapacityPlanning, :calibration}) end)
  end

  test "requirements come from the defaults until calibrate/0 measures this node" do
    :persistent_term.erase({CapacityPlanning, :calibration})
    r = CapacityPlanning.calculate_requirements(50_000, retention_seconds: 600, burst_ms: 200)
    assert %{basis: :default, max_events: 30_000_000, correlation_ttl_seconds: 20} = r
    assert r.ring_buffer_size == 16_384, "10k events of burst, next power of two"
    assert r.min_workers == 1 and r.recommended_workers == 1
    assert_in_delta r.memory_mb, 30_000_000 * r.calibration.bytes_per_event / 1_048_576, 0.1

    c = CapacityPlanning.calibrate(events: 50_000)
    assert c.drain_per_worker > 100_000, "a worker stores far more than the guide's 2000/s"
    assert c.bytes_per_event > 50 and c.bytes_per_event < 1_000

    measured = CapacityPlanning.calculate_requirements(50_000)
    assert %{basis: :measured, calibration: ^c} = measured

    heavy = CapacityPlanning.calculate_requirements(trunc(c.drain_per_worker * 3))
    assert heavy.min_workers == 3 and heavy.recommended_workers >= 4
    assert heavy.correlation_ttl_seconds == 10
    assert CapacityPlanning.calculate_requirements(100).correlation_ttl_seconds == 300
    assert CapacityPlanning.calculate_requirements(100).ring_buffer_size == 1024
  end

  test "bad arguments raise ArgumentError" do
    assert_raise ArgumentError, fn -> CapacityPlanning.calculate_requirements(0) end

    assert_raise ArgumentError, fn ->
      CapacityPlanning.calculate_requirements(10, burst_ms: -1)
    end

    assert_raise ArgumentError, fn -> CapacityPlanning.calibrate(events: 10) end
  end
end
