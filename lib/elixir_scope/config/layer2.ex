defmodule ElixirScope.Config.Layer2 do
  @moduledoc """
  Layer 2 configuration: the guide's §9.2 defaults plus the native
  pipeline's own settings (`:capture`, `storage.max_events`,
  `correlation.max_entries`: the most pending message halves and tracked
  processes the correlator keeps) and the pressure thresholds of guide
  §2.4 (see `ElixirScope.Capture.BackpressureManager`).

  The default pipeline reads overrides from the application environment:

      config :elixir_scope, :layer2, processing: [batch_size: 500]

  `:metrics` holds `emit_interval_ms` (how often each pipeline emits its
  `:telemetry` metrics, see `ElixirScope.Metrics.Layer2`; `0` turns it off)
  and `prometheus_port` (`nil`: off; a port, `0` for any free one, starts
  `ElixirScope.Metrics.Prometheus.serve/1` with the application).

  ## What can change while running

  `ElixirScope.Capture.PipelineManager.update_config/2` (and, for the
  default pipeline, a release upgrade that changes the `:elixir_scope`
  env, through the application's `config_change/3`) applies at once:

    * `:pipeline` — worker bounds (the count is clamped into them);
    * `:processing` — `batch_size`, `flush_interval_ms` (a worker's longest
      idle sleep);
    * `:correlation` — every key;
    * `:backpressure` — every key (read at each check);
    * `:storage` — `max_events` (the store evicts down to it at once) and
      the circuit breaker's threshold and timeout;
    * `:capture` — `max_payload_bytes`;
    * `:metrics` — `emit_interval_ms`.

  These are fixed when a pipeline starts, and changing one gives
  `{:error, {:restart_required, path}}`: `capture.ring_size`,
  `capture.shards`, `capture.overflow_strategy` and
  `metrics.prometheus_port`.
  """

  @type t :: %{
          pipeline: %{
            min_workers: pos_integer(),
            max_workers: pos_integer(),
            target_workers: pos_integer()
          },
          processing: %{
            batch_size: pos_integer(),
            flush_interval_ms: pos_integer(),
            max_batch_wait_ms: pos_integer()
          },
          correlation: %{
            ttl_seconds: pos_integer(),
            cleanup_interval_ms: pos_integer(),
            max_correlation_depth: pos_integer(),
            max_entries: pos_integer()
          },
          backpressure: %{
            check_interval_ms: pos_integer(),
            scale_up_threshold: float(),
            scale_down_threshold: float(),
            emergency_threshold: float(),
            high_threshold: float(),
            elevated_threshold: float(),
            high_latency_ms: pos_integer(),
            elevated_latency_ms: pos_integer(),
            memory_limit_mb: pos_integer(),
            critical_memory: float(),
            high_error_rate: float(),
            scale_down_after_checks: pos_integer(),
            shed_after_checks: pos_integer(),
            shed_fraction: float()
          },
          storage: %{
            write_batch_size: pos_integer(),
            write_timeout_ms: pos_integer(),
            max_events: pos_integer(),
            circuit_breaker_threshold: pos_integer(),
            circuit_breaker_timeout_ms: pos_integer()
          },
          capture: %{
            ring_size: pos_integer(),
            shards: pos_integer(),
            overflow_strategy: :drop_newest | :drop_oldest,
            max_payload_bytes: pos_integer()
          },
          metrics: %{
            emit_interval_ms: non_neg_integer(),
            prometheus_port: :inet.port_number() | nil
          }
        }

  @type error :: {:error, {:invalid_config, [atom()], atom()}}

  @doc "The defaults (guide §9.2, plus `:capture` and `storage.max_events`)."
  @spec default_config() :: t()
  def default_config do
    %{
      pipeline: %{min_workers: 2, max_workers: 16, target_workers: 4},
      processing: %{batch_size: 100, flush_interval_ms: 10, max_batch_wait_ms: 50},
      correlation: %{
        ttl_seconds: 300,
        cleanup_interval_ms: 60_000,
        max_correlation_depth: 100,
        max_entries: 1_000_000
      },
      backpressure: %{
        check_interval_ms: 100,
        scale_up_threshold: 0.7,
        scale_down_threshold: 0.3,
        emergency_threshold: 0.95,
        high_threshold: 0.80,
        elevated_threshold: 0.50,
        high_latency_ms: 50,
        elevated_latency_ms: 20,
        memory_limit_mb: 500,
        critical_memory: 0.90,
        high_error_rate: 0.05,
        scale_down_after_checks: 10,
        shed_after_checks: 10,
        shed_fraction: 0.5
      },
      storage: %{
        write_batch_size: 1000,
        write_timeout_ms: 5000,
        max_events: 1_000_000,
        circuit_breaker_threshold: 5,
        circuit_breaker_timeout_ms: 60_000
      },
      capture: %{
        ring_size: 32_768,
        shards: 8,
        overflow_strategy: :drop_newest,
        max_payload_bytes: 4096
      },
      metrics: %{emit_interval_ms: 1000, prometheus_port: nil}
    }
  end

  @fixed [
    [:capture, :ring_size],
    [:capture, :shards],
    [:capture, :overflow_strategy],
    [:metrics, :prometheus_port]
  ]

  @doc "Paths that cannot change while a pipeline runs (changing one needs a restart)."
  @spec fixed_at_start() :: [[atom()]]
  def fixed_at_start, do: @fixed

  @doc """
  Deep-merges `overrides` (nested keyword lists or maps) into `config` and
  validates the result.
  """
  @spec merge(t(), keyword() | map()) :: {:ok, t()} | error()
  def merge(config, overrides) do
    with {:ok, merged} <- deep_merge(config, overrides, []), do: validate(merged)
  end

  defp deep_merge(config, overrides, path) when is_list(overrides) or is_map(overrides) do
    if is_list(overrides) and not Keyword.keyword?(overrides) do
      {:error, {:invalid_config, Enum.reverse(path), :not_a_keyword_list}}
    else
      Enum.reduce_while(overrides, {:ok, config}, fn {key, value}, {:ok, acc} ->
        case Map.fetch(acc, key) do
          {:ok, %{} = section} when is_list(value) or is_map(value) ->
            case deep_merge(section, value, [key | path]) do
              {:ok, merged} -> {:cont, {:ok, Map.put(acc, key, merged)}}
              error -> {:halt, error}
            end

          {:ok, %{}} ->
            {:halt, {:error, {:invalid_config, Enum.reverse([key | path]), :not_a_section}}}

          {:ok, _} ->
            {:cont, {:ok, Map.put(acc, key, value)}}

          :error ->
            {:halt, {:error, {:invalid_config, Enum.reverse([key | path]), :unknown_key}}}
        end
      end)
    end
  end

  defp deep_merge(_config, _overrides, path),
    do: {:error, {:invalid_config, Enum.reverse(path), :not_a_keyword_list}}

  @doc """
  Checks every value; returns `{:ok, config}` or
  `{:error, {:invalid_config, path, reason}}` for the first bad one.
  """
  @spec validate(map()) :: {:ok, t()} | error()
  def validate(config) when is_map(config) do
    defaults = default_config()

    checks =
      for {section, fields} <- defaults, {key, _} <- fields do
        path = [section, key]
        {path, get_in(config, path)}
      end

    with :ok <- unknown_keys(config, defaults),
         :ok <- Enum.reduce_while(checks, :ok, &check_value/2),
         :ok <- cross_checks(config) do
      {:ok, config}
    end
  end

  def validate(_), do: {:error, {:invalid_config, [], :not_a_map}}

  defp unknown_keys(config, defaults) do
    Enum.reduce_while(config, :ok, fn {section, fields}, :ok ->
      cond do
        not Map.has_key?(defaults, section) ->
          {:halt, {:error, {:invalid_config, [section], :unknown_key}}}

        not is_map(fields) ->
          {:halt, {:error, {:invalid_config, [section], :not_a_section}}}

        key = Enum.find(Map.keys(fields), &(not Map.has_key?(defaults[section], &1))) ->
          {:halt, {:error, {:invalid_config, [section, key], :unknown_key}}}

        true ->
          {:cont, :ok}
      end
    end)
  end

  defp check_value({path, value}, :ok) do
    case check(path, value) do
      :ok -> {:cont, :ok}
      reason -> {:halt, {:error, {:invalid_config, path, reason}}}
    end
  end

  @backpressure_counts [
    :check_interval_ms,
    :high_latency_ms,
    :elevated_latency_ms,
    :memory_limit_mb,
    :scale_down_after_checks,
    :shed_after_checks
  ]

  defp check([:backpressure, k], v) when k in @backpressure_counts,
    do: if(is_integer(v) and v > 0, do: :ok, else: :not_a_positive_integer)

  defp check([:backpressure, _], v) when is_float(v) and v >= 0.0 and v <= 1.0, do: :ok
  defp check([:backpressure, _], _), do: :not_a_fraction

  defp check([:capture, :overflow_strategy], v) when v in [:drop_newest, :drop_oldest], do: :ok
  defp check([:capture, :overflow_strategy], _), do: :invalid_overflow_strategy

  defp check([:capture, :ring_size], v) when is_integer(v) and v > 0 and v <= 1_073_741_824 do
    if Bitwise.band(v, v - 1) == 0, do: :ok, else: :size_must_be_power_of_2
  end

  # The native store's largest bound (elixir_scope_core store::MAX_EVENTS).
  defp check([:storage, :max_events], v) when is_integer(v) and v > 1_073_741_824,
    do: :too_large

  defp check([:metrics, :emit_interval_ms], v) when is_integer(v) and v >= 0, do: :ok
  defp check([:metrics, :emit_interval_ms], _), do: :not_a_non_negative_integer
  defp check([:metrics, :prometheus_port], nil), do: :ok
  defp check([:metrics, :prometheus_port], v) when is_integer(v) and v in 0..65_535, do: :ok
  defp check([:metrics, :prometheus_port], _), do: :not_a_port

  defp check([:pipeline, _], v) when is_integer(v) and v > 0 and v <= 256, do: :ok
  defp check([:pipeline, _], _), do: :not_a_worker_count
  defp check(_, v) when is_integer(v) and v > 0, do: :ok
  defp check(_, _), do: :not_a_positive_integer

  defp cross_checks(%{pipeline: p}) do
    cond do
      p.min_workers > p.max_workers ->
        {:error, {:invalid_config, [:pipeline, :min_workers], :greater_than_max_workers}}

      p.target_workers < p.min_workers or p.target_workers > p.max_workers ->
        {:error, {:invalid_config, [:pipeline, :target_workers], :outside_min_max}}

      true ->
        :ok
    end
  end

  @doc false
  # The flat map the NIF takes; `workers` is the count to start with.
  @spec to_native(t(), pos_integer()) :: map()
  def to_native(config, workers) do
    %{
      shards: config.capture.shards,
      ring_size: config.capture.ring_size,
      overflow: config.capture.overflow_strategy,
      batch_size: config.processing.batch_size,
      min_workers: config.pipeline.min_workers,
      max_workers: config.pipeline.max_workers,
      workers: workers,
      max_idle_sleep_us: config.processing.flush_interval_ms * 1000,
      max_payload_bytes: config.capture.max_payload_bytes,
      breaker_threshold: config.storage.circuit_breaker_threshold,
      breaker_timeout_ms: config.storage.circuit_breaker_timeout_ms
    }
  end

  @doc "The application-environment config merged into the defaults."
  @spec from_env() :: {:ok, t()} | error()
  def from_env do
    merge(default_config(), Application.get_env(:elixir_scope, :layer2, []))
  end
end
