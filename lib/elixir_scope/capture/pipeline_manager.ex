defmodule ElixirScope.Capture.PipelineManager do
  @moduledoc """
  Owns one native pipeline (ring shards, worker threads) writing into a
  store, and is its control interface.

  The application starts the default pipeline, registered under this
  module's name, from the `:elixir_scope, :layer2` application env. More
  pipelines can be started, e.g. in tests:

      {:ok, ring} = RingBuffer.new(size: 1024)
      {:ok, pid} = PipelineManager.start_link(buffers: [ring])

  Options: `:name`, `:buffers` (extra rings to drain), `:config` (overrides
  merged into `Config.Layer2.default_config/0`), `:store` (`:default`, the
  application's store, or `:private` for a store of its own).

  The native pipeline outlives a crash of this process: the default
  pipeline is kept in `:persistent_term` and a restarted manager reattaches
  to it, so nothing queued is lost. Stopping the manager normally stops the
  workers.
  """
  use GenServer
  require Logger

  alias ElixirScope.Capture.BackpressureManager
  alias ElixirScope.Config.Layer2
  alias ElixirScope.{Native, Telemetry}

  @registry ElixirScope.PipelineRegistry

  @type server :: GenServer.server()

  @doc "Starts a pipeline manager; see the module doc for options."
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts \\ []) do
    {name, opts} = Keyword.pop(opts, :name)
    gen_opts = if name, do: [name: name], else: []
    GenServer.start_link(__MODULE__, Keyword.put(opts, :name, name), gen_opts)
  end

  @doc false
  def child_spec(opts) do
    %{id: Keyword.get(opts, :name, __MODULE__), start: {__MODULE__, :start_link, [opts]}}
  end

  @doc "Starts or stops workers until there are `n` (within the configured bounds)."
  @spec scale_workers(server(), pos_integer()) :: :ok | {:error, term()}
  def scale_workers(server \\ __MODULE__, n)

  def scale_workers(server, n) when is_integer(n) and n > 0,
    do: Native.pipeline_scale_workers(pipeline(server), n)

  def scale_workers(_server, n),
    do: raise(ArgumentError, "worker count must be a positive integer, got: #{inspect(n)}")

  @doc """
  Pipeline summary: `workers`, `events_processed`, `avg_latency_ms` (ring to
  store), `buffer_utilization` (fullest shard, 0.0..1.0), plus the
  ring-to-store latency percentiles in ms.
  """
  @spec get_pipeline_stats(server()) :: %{
          workers: non_neg_integer(),
          events_processed: non_neg_integer(),
          avg_latency_ms: float(),
          buffer_utilization: float(),
          latency_p50_ms: float(),
          latency_p95_ms: float(),
          latency_p99_ms: float()
        }
  def get_pipeline_stats(server \\ __MODULE__) do
    s = Native.pipeline_stats(pipeline(server))
    ms = fn ns -> ns / 1_000_000 end

    %{
      workers: s.workers,
      events_processed: s.stored,
      avg_latency_ms: ms.(s.latency_ns.mean),
      buffer_utilization: s.buffer_utilization,
      latency_p50_ms: ms.(s.latency_ns.p50),
      latency_p95_ms: ms.(s.latency_ns.p95),
      latency_p99_ms: ms.(s.latency_ns.p99)
    }
  end

  @doc """
  Applies config changes live, e.g. `update_config(processing: [batch_size: 500])`.
  Every key that can change while running does (see `ElixirScope.Config.Layer2`);
  a key fixed at start gives `{:error, {:restart_required, path}}` and a bad
  value `{:error, {:invalid_config, path, reason}}`; either way nothing
  changes.
  """
  @spec update_config(server(), keyword() | map()) ::
          :ok | Layer2.error() | {:error, {:restart_required, [atom()]}}
  def update_config(server \\ __MODULE__, changes),
    do: GenServer.call(server, {:update_config, changes})

  @doc "The current configuration."
  @spec get_config(server()) :: Layer2.t()
  def get_config(server \\ __MODULE__), do: GenServer.call(server, :config)

  @doc false
  # The native handle. Named pipelines keep theirs in :persistent_term and
  # every manager registers its handle in the registry, so the hot path
  # (ingest) makes no call to this process.
  def pipeline(server \\ __MODULE__)

  def pipeline(name) when is_atom(name) do
    case :persistent_term.get({__MODULE__, name}, nil) do
      nil when name == __MODULE__ ->
        raise ArgumentError, "the default ElixirScope pipeline is not running"

      nil ->
        call_pipeline(name)

      handle ->
        handle
    end
  end

  def pipeline(pid) when is_pid(pid) do
    case Registry.values(@registry, :pipelines, pid) do
      [handle] -> handle
      [] -> call_pipeline(pid)
    end
  end

  def pipeline(server), do: call_pipeline(server)

  defp call_pipeline(server) do
    GenServer.call(server, :pipeline)
  catch
    :exit, _ -> raise ArgumentError, "no ElixirScope pipeline at #{inspect(server)}"
  end

  @doc false
  # The `pipeline:` option of a call's keyword options: `{:ok, server}`, or
  # `:error` when not given. Raises on options that are not a keyword list.
  def server_option(opts) do
    unless is_list(opts) and Keyword.keyword?(opts),
      do: raise(ArgumentError, "options must be a keyword list, got: #{inspect(opts)}")

    Keyword.fetch(opts, :pipeline)
  end

  @doc false
  # The native handle a call's options address (default: the default
  # pipeline). The two common shapes skip the general option walk.
  def from_options([]), do: pipeline(__MODULE__)
  def from_options([{:pipeline, server}]), do: pipeline(server)

  def from_options(opts) do
    case server_option(opts) do
      {:ok, server} -> pipeline(server)
      :error -> pipeline(__MODULE__)
    end
  end

  @doc false
  # Native handles of every running pipeline (for flush).
  def all_pipelines do
    for {_pid, handle} <- Registry.lookup(@registry, :pipelines), do: handle
  end

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)

    with {:ok, config} <- Layer2.merge(base_config(opts), Keyword.get(opts, :config, [])),
         {:ok, handle} <- attach_or_start(opts, config) do
      {:ok, _} = Registry.register(@registry, :pipelines, handle)
      state = %{name: opts[:name], pipeline: handle, config: config, check: initial_check(handle)}
      schedule_emit(config)
      {:ok, check(state)}
    else
      {:error, reason} -> {:stop, reason}
    end
  end

  defp base_config(opts) do
    if opts[:name] == __MODULE__ do
      case Layer2.from_env() do
        {:ok, config} ->
          config

        {:error, reason} ->
          raise ArgumentError, "invalid :elixir_scope, :layer2 config: #{inspect(reason)}"
      end
    else
      Layer2.default_config()
    end
  end

  defp attach_or_start(opts, config) do
    key = {__MODULE__, opts[:name]}

    case opts[:name] && :persistent_term.get(key, nil) do
      nil ->
        with {:ok, store} <- store_for(opts, config),
             rings = Enum.map(Keyword.get(opts, :buffers, []), & &1.ref),
             native = Layer2.to_native(config, config.pipeline.min_workers),
             {:ok, handle} <- Native.pipeline_start(store, native, rings) do
          if opts[:name], do: :persistent_term.put(key, handle)
          {:ok, handle}
        end

      handle ->
        {:ok, handle}
    end
  end

  defp store_for(opts, config) do
    case Keyword.get(opts, :store, :default) do
      :default -> {:ok, ElixirScope.Application.store()}
      :private -> {:ok, Native.store_new(config.storage.max_events, config.correlation)}
      other -> {:error, {:invalid_store, other}}
    end
  end

  @impl true
  def handle_call(:pipeline, _from, state), do: {:reply, state.pipeline, state}
  def handle_call(:config, _from, state), do: {:reply, state.config, state}
  def handle_call(:pressure, _from, state), do: {:reply, state.check.pressure, state}
  def handle_call(:check_state, _from, state), do: {:reply, state.check, state}

  def handle_call(:emit_metrics, _from, state) do
    ElixirScope.Metrics.Layer2.emit(state.check, state.pipeline, name(state))
    {:reply, :ok, state}
  end

  def handle_call(:scaling_recommendation, _from, state),
    do: {:reply, state.check.recommendation, state}

  def handle_call({:load_shedding, mode}, _from, state),
    do: {:reply, :ok, set_shedding(state, mode)}

  def handle_call({:update_config, changes}, _from, state) do
    with {:ok, config} <- Layer2.merge(state.config, changes),
         :ok <- check_fixed(state.config, config),
         :ok <- apply_config(state.pipeline, config) do
      # Emitting was off: start it (a running timer picks up a new interval).
      if state.config.metrics.emit_interval_ms == 0, do: schedule_emit(config)
      {:reply, :ok, %{state | config: config}}
    else
      error -> {:reply, error, state}
    end
  end

  defp check_fixed(old, new) do
    case Enum.find(Layer2.fixed_at_start(), &(get_in(old, &1) != get_in(new, &1))) do
      nil -> :ok
      path -> {:error, {:restart_required, path}}
    end
  end

  defp apply_config(handle, config) do
    workers = length(Native.pipeline_worker_ids(handle))
    native = Layer2.to_native(config, min(workers, config.pipeline.max_workers))

    case Native.pipeline_update(handle, native) do
      :ok ->
        store = Native.pipeline_store(handle)
        Native.store_set_max_events(store, config.storage.max_events)
        Native.store_set_correlation(store, config.correlation)
        clamp_workers(handle, workers, config.pipeline)

      {:error, reason} ->
        {:error, {:invalid_config, [:pipeline], reason}}
    end
  end

  defp clamp_workers(handle, workers, %{min_workers: min, max_workers: max}) do
    cond do
      workers < min -> Native.pipeline_scale_workers(handle, min)
      workers > max -> Native.pipeline_scale_workers(handle, max)
      true -> :ok
    end
  end

  # --- pressure checks (see BackpressureManager) ---------------------------

  # A manager reattaching to a pipeline that was shedding treats it as
  # automatic shedding, which ends when pressure falls.
  defp initial_check(handle) do
    shedding = if Native.pipeline_stats(handle).shedding > 0, do: :auto, else: :off

    %{
      pressure: :normal,
      recommendation: :maintain,
      inputs: nil,
      window: nil,
      normal_streak: 0,
      critical_streak: 0,
      logged_peak: :normal,
      shedding: shedding,
      stats: nil,
      history: []
    }
  end

  # Pressure checks kept for `Debug.Layer2.backpressure_analysis/1`.
  @history 100

  @impl true
  def handle_info(:check, state), do: {:noreply, check(state)}

  def handle_info(:emit_metrics, state) do
    if state.config.metrics.emit_interval_ms > 0 do
      ElixirScope.Metrics.Layer2.emit(state.check, state.pipeline, name(state))
      schedule_emit(state.config)
    end

    {:noreply, state}
  end

  def handle_info(_other, state), do: {:noreply, state}

  # Measures the pipeline, rates the pressure, scales and sheds; schedules
  # the next check.
  defp check(state) do
    %{pipeline: h, config: config, check: previous} = state
    bp = config.backpressure
    window = Native.pipeline_metrics_tick(h)
    stats = Native.pipeline_stats(h)
    store = Native.store_stats(Native.pipeline_store(h))

    inputs = %{
      buffer_utilization: stats.buffer_utilization,
      latency_p99_ms: window.last.latency_ns.p99 / 1.0e6,
      memory_ratio:
        (stats.ring_memory_bytes + store.memory_bytes) / (bp.memory_limit_mb * 1_048_576),
      error_rate: error_rate(previous.stats, stats)
    }

    pressure = BackpressureManager.pressure(inputs, bp)
    recommendation = BackpressureManager.recommend(pressure, stats.workers, config.pipeline)
    streak = if pressure == :normal, do: previous.normal_streak + 1, else: 0
    critical_streak = if pressure == :critical, do: previous.critical_streak + 1, else: 0

    check = %{
      previous
      | pressure: pressure,
        recommendation: recommendation,
        inputs: inputs,
        window: window,
        normal_streak: streak,
        critical_streak: critical_streak,
        stats: stats
    }

    Process.send_after(self(), :check, bp.check_interval_ms)
    changed(state, previous, check)
    check = log_pressure(state, previous, check)

    %{state | check: check}
    |> scale(recommendation, stats)
    |> shed_automatically()
    |> remember(previous, stats)
  end

  # Records the check just made, with what it did, newest first.
  defp remember(state, previous, stats) do
    check = state.check
    workers = length(Native.pipeline_worker_ids(state.pipeline))

    actions =
      [
        workers != stats.workers && {:scaled, stats.workers, workers},
        check.shedding != previous.shedding &&
          {:shedding, if(check.shedding == :off, do: :stopped, else: :started), check.shedding},
        check.pressure != previous.pressure && {:pressure, previous.pressure, check.pressure}
      ]
      |> Enum.filter(& &1)

    entry = %{
      at_ms: System.monotonic_time(:millisecond),
      pressure: check.pressure,
      inputs: check.inputs,
      workers: workers,
      shedding_ratio: Native.pipeline_stats(state.pipeline).shedding,
      shed_events: stats.dropped.shed,
      actions: actions
    }

    put_in(state.check.history, Enum.take([entry | previous.history], @history))
  end

  defp schedule_emit(%{metrics: %{emit_interval_ms: 0}}), do: :ok

  defp schedule_emit(%{metrics: %{emit_interval_ms: ms}}),
    do: Process.send_after(self(), :emit_metrics, ms)

  defp name(state), do: state.name || self()

  @ranks %{normal: 0, elevated: 1, high: 2, critical: 3}

  # Logs a pressure change when the level rises above the highest logged
  # since it was last normal, and when it is back to normal: a pipeline
  # flapping between :high and :critical logs once, not every check.
  defp log_pressure(state, previous, check) do
    peak = previous.logged_peak
    to = check.pressure

    cond do
      to == :normal and peak != :normal ->
        Logger.info("elixir_scope: pressure back to normal (peak #{peak})", pipeline: name(state))
        %{check | logged_peak: :normal}

      @ranks[to] > @ranks[peak] ->
        level = if to in [:high, :critical], do: :warning, else: :info

        Logger.log(level, "elixir_scope: pressure #{to} (#{inspect(check.inputs)})",
          pipeline: name(state)
        )

        %{check | logged_peak: to}

      true ->
        check
    end
  end

  # `:telemetry` events for what changed since the previous check.
  defp changed(state, previous, check) do
    meta = %{pipeline: name(state)}

    if check.pressure != previous.pressure do
      Telemetry.execute(
        [:elixir_scope, :layer2, :pressure],
        check.inputs,
        Map.merge(meta, %{from: previous.pressure, to: check.pressure})
      )
    end

    breaker = check.stats.circuit_breaker
    before = if previous.stats, do: previous.stats.circuit_breaker, else: breaker
    measurements = Map.take(breaker, [:trips, :consecutive_failures])

    if breaker.trips > before.trips do
      Telemetry.execute(
        [:elixir_scope, :layer2, :breaker],
        measurements,
        Map.put(meta, :state, :opened)
      )
    end

    if breaker.state == :closed and (before.state != :closed or breaker.trips > before.trips) do
      Telemetry.execute(
        [:elixir_scope, :layer2, :breaker],
        measurements,
        Map.put(meta, :state, :closed)
      )
    end
  end

  # Events dropped (other than shed) per event ingested since the last check.
  defp error_rate(nil, _now), do: 0.0

  defp error_rate(before, now) do
    ingested = now.ingested - before.ingested
    dropped = now.dropped_total - now.dropped.shed - (before.dropped_total - before.dropped.shed)
    if ingested > 0, do: dropped / ingested, else: 0.0
  end

  defp scale(state, {:scale_up, n}, stats) do
    Native.pipeline_scale_workers(state.pipeline, stats.workers + n)
    state
  end

  defp scale(state, {:scale_down, n}, stats) do
    bp = state.config.backpressure

    if state.check.normal_streak >= bp.scale_down_after_checks and
         stats.buffer_utilization < bp.scale_down_threshold do
      Native.pipeline_scale_workers(state.pipeline, stats.workers - n)
      put_in(state.check.normal_streak, 0)
    else
      state
    end
  end

  defp scale(state, :maintain, _stats), do: state

  defp shed_automatically(%{check: check} = state) do
    bp = state.config.backpressure

    case BackpressureManager.shedding(check.shedding, check.pressure, check.critical_streak, bp) do
      same when same == check.shedding -> state
      mode -> set_shedding(state, mode)
    end
  end

  defp set_shedding(state, mode) do
    fraction = if mode == :off, do: 0.0, else: state.config.backpressure.shed_fraction
    Native.pipeline_set_shedding(state.pipeline, fraction)
    was = state.check.shedding

    if was == :off != (mode == :off) do
      Telemetry.execute(
        [:elixir_scope, :layer2, :shedding],
        %{fraction: fraction},
        %{
          pipeline: name(state),
          state: if(mode == :off, do: :stopped, else: :started),
          mode: if(mode == :off, do: was, else: mode)
        }
      )
    end

    put_in(state.check.shedding, mode)
  end

  @impl true
  def terminate(reason, state) do
    if reason in [:normal, :shutdown] or match?({:shutdown, _}, reason) do
      Native.pipeline_stop(state.pipeline)
      if state.name, do: :persistent_term.erase({__MODULE__, state.name})
    end

    :ok
  end
end
