defmodule ElixirScope.Application do
  @moduledoc false
  # Creates the application's event store (outside the supervision tree, so
  # no process crash can lose stored events) and supervises the default
  # pipeline.
  use Application

  alias ElixirScope.Capture.PipelineManager
  alias ElixirScope.Config.Layer2

  @store_key {ElixirScope, :store}

  @impl true
  def start(_type, _args) do
    {:ok, config} = Layer2.from_env()

    unless :persistent_term.get(@store_key, nil) do
      :persistent_term.put(
        @store_key,
        ElixirScope.Native.store_new(config.storage.max_events, config.correlation)
      )
    end

    children = [
      {Registry, keys: :duplicate, name: ElixirScope.PipelineRegistry},
      ElixirScope.NativeLog,
      {PipelineManager, name: PipelineManager},
      {DynamicSupervisor, name: ElixirScope.Tracer.Supervisor, strategy: :one_for_one},
      ElixirScope.Cluster.Local
    ]

    with {:ok, sup} <-
           Supervisor.start_link(children, strategy: :one_for_one, name: ElixirScope.Supervisor) do
      serve_prometheus(config.metrics.prometheus_port)
      {:ok, sup}
    end
  end

  @prometheus_key {ElixirScope, :prometheus_port}

  @doc false
  # The port of the Prometheus endpoint the application serves, if any.
  def prometheus_port, do: :persistent_term.get(@prometheus_key, nil)

  defp serve_prometheus(nil), do: :ok

  defp serve_prometheus(port) do
    case ElixirScope.Metrics.Prometheus.serve(port: port) do
      {:ok, bound} ->
        :persistent_term.put(@prometheus_key, bound)

      {:error, reason} ->
        require Logger

        Logger.error(
          "elixir_scope: Prometheus endpoint on port #{port} not started: #{inspect(reason)}"
        )
    end
  end

  # A release upgrade that changes the `:layer2` env applies the live keys to
  # the default pipeline; a key fixed at start is logged, not applied.
  @impl true
  def config_change(changed, _new, _removed) do
    if Keyword.has_key?(changed, :layer2) do
      with {:ok, config} <- Layer2.from_env(),
           :ok <- PipelineManager.update_config(PipelineManager, config) do
        :ok
      else
        {:error, reason} ->
          require Logger
          Logger.warning("elixir_scope: :layer2 config change not applied: #{inspect(reason)}")
      end
    end

    :ok
  end

  @impl true
  def stop(_state) do
    if port = prometheus_port() do
      ElixirScope.Metrics.Prometheus.stop(port)
      :persistent_term.erase(@prometheus_key)
    end

    :persistent_term.erase(@store_key)
    :ok
  end

  @doc false
  def store do
    case :persistent_term.get(@store_key, nil) do
      nil -> raise ArgumentError, "the :elixir_scope application is not started"
      store -> store
    end
  end
end
