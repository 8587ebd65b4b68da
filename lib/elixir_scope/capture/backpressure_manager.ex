defmodule ElixirScope.Capture.BackpressureManager do
  @moduledoc """
  Pressure, scaling and load shedding (guide §2.4).

  Every `backpressure.check_interval_ms` each `PipelineManager` measures its
  pipeline (fullest shard, recent ring-to-store p99 latency, Layer 2
  memory against `memory_limit_mb`, and the share of events dropped), rates
  the pressure and acts on it:

    * `:critical` — a shard above `emergency_threshold`, or memory above
      `critical_memory` of the limit;
    * `:high` — a shard above `high_threshold`, p99 above
      `high_latency_ms`, or an error rate above `high_error_rate`;
    * `:elevated` — a shard above `elevated_threshold`, or p99 above
      `elevated_latency_ms`;
    * `:normal` otherwise.

  Scaling follows the guide (`:critical` adds up to 4 workers, `:high` up
  to 2, `:elevated` one while below `target_workers`, `:normal` removes one
  above `min_workers`), with hysteresis: a worker is only removed after
  `scale_down_after_checks` consecutive normal checks with every shard
  below `scale_down_threshold`. It never adds workers beyond the number
  of online schedulers (cores): store writes are serialized, so more
  threads than cores only contend. `PipelineManager.scale_workers/2` can
  still go up to `max_workers`.

  Load shedding drops whole processes (by pid hash, so the processes kept
  have complete causal chains), `shed_fraction` of them; every shed event
  is counted (`ElixirScope.stats().dropped.shed`). It turns on by itself
  only under sustained overload, after `shed_after_checks` checks in a row
  at `:critical` (10 checks of 100 ms by default: a burst the pipeline
  drains within a second sheds nothing; while it lasts the rings absorb or
  count it), and off once pressure is back to `:normal` or `:elevated`;
  `enable_load_shedding/0` turns it on until `disable_load_shedding/0`.
  Events ingested with `on_full: :wait` are never shed.

  The functions take the pipeline's manager (default: the default
  pipeline's).
  """

  alias ElixirScope.Capture.PipelineManager

  @type pressure :: :normal | :elevated | :high | :critical
  @type recommendation :: {:scale_up, pos_integer()} | {:scale_down, pos_integer()} | :maintain

  @typedoc "What pressure is rated from."
  @type inputs :: %{
          buffer_utilization: float(),
          latency_p99_ms: float(),
          memory_ratio: float(),
          error_rate: float()
        }

  @doc "The pressure measured at the last check."
  @spec check_pressure(GenServer.server()) :: pressure()
  def check_pressure(server \\ PipelineManager), do: GenServer.call(server, :pressure)

  @doc "What the last check recommends for the worker count."
  @spec get_scaling_recommendation(GenServer.server()) :: recommendation()
  def get_scaling_recommendation(server \\ PipelineManager),
    do: GenServer.call(server, :scaling_recommendation)

  @doc "Sheds `shed_fraction` of the processes until `disable_load_shedding/0`."
  @spec enable_load_shedding(GenServer.server()) :: :ok
  def enable_load_shedding(server \\ PipelineManager),
    do: GenServer.call(server, {:load_shedding, :manual})

  @doc "Stops shedding (automatic shedding may start again at `:critical`)."
  @spec disable_load_shedding(GenServer.server()) :: :ok
  def disable_load_shedding(server \\ PipelineManager),
    do: GenServer.call(server, {:load_shedding, :off})

  @doc false
  # Rates pressure from `inputs` with the `backpressure` config section.
  @spec pressure(inputs(), map()) :: pressure()
  def pressure(i, c) do
    cond do
      i.buffer_utilization > c.emergency_threshold or i.memory_ratio > c.critical_memory ->
        :critical

      i.buffer_utilization > c.high_threshold or i.latency_p99_ms > c.high_latency_ms or
          i.error_rate > c.high_error_rate ->
        :high

      i.buffer_utilization > c.elevated_threshold or i.latency_p99_ms > c.elevated_latency_ms ->
        :elevated

      true ->
        :normal
    end
  end

  @doc false
  # The shedding mode after a check: automatic shedding starts after
  # `shed_after_checks` critical checks in a row and stops when pressure
  # falls to :normal or :elevated; manual shedding is left alone.
  @spec shedding(:off | :auto | :manual, pressure(), non_neg_integer(), map()) ::
          :off | :auto | :manual
  def shedding(:off, :critical, critical_streak, %{shed_after_checks: n})
      when critical_streak >= n,
      do: :auto

  def shedding(:auto, pressure, _streak, _bp) when pressure in [:normal, :elevated], do: :off
  def shedding(mode, _pressure, _streak, _bp), do: mode

  @doc false
  # The guide's scaling rule for `workers` within the `pipeline` bounds,
  # adding none beyond `cores`.
  @spec recommend(pressure(), non_neg_integer(), map(), pos_integer()) :: recommendation()
  def recommend(
        pressure,
        workers,
        %{min_workers: min, max_workers: max, target_workers: target},
        cores \\ System.schedulers_online()
      ) do
    room = max(0, min(max, max(min, cores)) - workers)

    case pressure do
      :critical when room > 0 -> {:scale_up, min(4, room)}
      :high when room > 0 -> {:scale_up, min(2, room)}
      :elevated when workers < target and room > 0 -> {:scale_up, 1}
      :normal when workers > min -> {:scale_down, 1}
      _ -> :maintain
    end
  end
end
