defmodule ElixirScope.Metrics.Prometheus do
  @moduledoc """
  Layer 2 metrics in the Prometheus text exposition format (0.0.4), and an
  HTTP endpoint serving them (guide D.2).

      ElixirScope.Metrics.Prometheus.text()          # the text, for any exporter
      {:ok, port} = ElixirScope.Metrics.Prometheus.serve(port: 9568)
      # GET http://127.0.0.1:9568/metrics

  `metrics.prometheus_port` in the `:elixir_scope, :layer2` config starts
  the endpoint with the application (off by default).

  Every series carries a `pipeline` label (the manager's name, or its
  pid). The metrics:

  | metric | type | what |
  |---|---|---|
  | `elixir_scope_layer2_events_processed_total` | counter | events stored |
  | `elixir_scope_layer2_events_ingested_total` | counter | events offered to the pipeline |
  | `elixir_scope_layer2_events_dropped_total{cause}` | counter | events dropped, by cause (`buffer_full`, `overwritten`, `shed`, `invalid`, `worker_crash`) |
  | `elixir_scope_layer2_processing_duration_seconds` | histogram | ring-to-store latency, since the pipeline started |
  | `elixir_scope_layer2_correlation_success_rate` | gauge | share of events expecting a partner that found it |
  | `elixir_scope_layer2_worker_pool_size` | gauge | worker threads |
  | `elixir_scope_layer2_buffer_utilization_percent{shard}` | gauge | fill of each ring shard |
  | `elixir_scope_layer2_queued_events` | gauge | events in the rings, not stored yet |
  | `elixir_scope_layer2_store_events` | gauge | events the store holds |
  | `elixir_scope_layer2_store_bytes` | gauge | the store's memory, indexes included |
  | `elixir_scope_layer2_pressure_level` | gauge | 0 normal, 1 elevated, 2 high, 3 critical |
  | `elixir_scope_layer2_shedding_ratio` | gauge | share of processes being shed |
  | `elixir_scope_trace_sessions` | gauge | trace sessions running (on this node) |
  | `elixir_scope_cross_node_linked_total` | counter | receives from other nodes linked here (cluster sessions) |
  | `elixir_scope_cross_node_waiting{half}` | gauge | sends and receives crossing nodes waiting for their other half |
  | `elixir_scope_cross_node_dropped_total` | counter | halves crossing nodes given up (see `EventCorrelator.metrics/1`) |
  | `elixir_scope_cross_node_busy_seconds_total` | counter | time the link exchange's native steps took here |

  Building the text reads counters the pipeline keeps anyway: nothing is
  added to the ingest or worker paths.
  """

  alias ElixirScope.Capture.PipelineManager
  alias ElixirScope.Native

  # Histogram bounds, seconds: 10 µs to 5 s.
  @bounds [1.0e-5, 5.0e-5, 1.0e-4, 5.0e-4, 1.0e-3, 5.0e-3, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]
  @levels %{normal: 0, elevated: 1, high: 2, critical: 3}

  @doc "The metrics of a pipeline (default: the application's) as Prometheus text."
  @spec text(GenServer.server()) :: String.t()
  def text(server \\ PipelineManager) do
    handle = PipelineManager.pipeline(server)
    check = GenServer.call(server, :check_state)
    stats = Native.pipeline_stats(handle)
    store = Native.pipeline_store(handle)
    store_stats = Native.store_stats(store)
    correlation = Native.correlator_stats(store)
    {cumulative, count, sum_ns} = Native.pipeline_latency_histogram(handle, bounds_ns())
    p = [pipeline: label(server)]

    [
      metric("elixir_scope_layer2_events_processed_total", :counter, "Events stored.", [
        {p, stats.stored}
      ]),
      metric(
        "elixir_scope_layer2_events_ingested_total",
        :counter,
        "Events offered to the pipeline.",
        [{p, stats.ingested}]
      ),
      metric(
        "elixir_scope_layer2_events_dropped_total",
        :counter,
        "Events dropped, by cause.",
        for({cause, n} <- Enum.sort(stats.dropped), do: {p ++ [cause: cause], n})
      ),
      histogram(
        "elixir_scope_layer2_processing_duration_seconds",
        "Ring-to-store latency of stored events, since the pipeline started.",
        p,
        cumulative,
        count,
        sum_ns / 1.0e9
      ),
      metric(
        "elixir_scope_layer2_correlation_success_rate",
        :gauge,
        "Share of events expecting a partner (a return, a receive) that found it.",
        [{p, correlation.success_rate}]
      ),
      metric("elixir_scope_layer2_worker_pool_size", :gauge, "Worker threads.", [
        {p, stats.workers}
      ]),
      metric(
        "elixir_scope_layer2_buffer_utilization_percent",
        :gauge,
        "Fill of each ring shard, in percent.",
        for(
          {u, i} <- Enum.with_index(stats.shard_utilization),
          do: {p ++ [shard: i], u * 100}
        )
      ),
      metric(
        "elixir_scope_layer2_queued_events",
        :gauge,
        "Events in the rings, not stored yet.",
        [
          {p, stats.queued}
        ]
      ),
      metric("elixir_scope_layer2_store_events", :gauge, "Events the store holds.", [
        {p, store_stats.retained}
      ]),
      metric(
        "elixir_scope_layer2_store_bytes",
        :gauge,
        "Memory of the store, indexes included.",
        [{p, store_stats.memory_bytes}]
      ),
      metric(
        "elixir_scope_layer2_pressure_level",
        :gauge,
        "Pressure at the last check: 0 normal, 1 elevated, 2 high, 3 critical.",
        [{p, Map.fetch!(@levels, check.pressure)}]
      ),
      metric(
        "elixir_scope_layer2_shedding_ratio",
        :gauge,
        "Share of processes being shed (0 when not shedding).",
        [{p, stats.shedding}]
      ),
      metric("elixir_scope_trace_sessions", :gauge, "Trace sessions running on this node.", [
        {[], trace_sessions()}
      ])
      | cross_node(p, correlation.cross_node)
    ]
    |> IO.iodata_to_binary()
  end

  # The cluster link exchange's families (see `ElixirScope.Cluster.link/1`).
  defp cross_node(p, x) do
    [
      metric(
        "elixir_scope_cross_node_linked_total",
        :counter,
        "Receives from other nodes linked here.",
        [{p, x.linked}]
      ),
      metric(
        "elixir_scope_cross_node_waiting",
        :gauge,
        "Messages crossing nodes waiting for their other half, by half.",
        [{p ++ [half: :sends], x.waiting_sends}, {p ++ [half: :receives], x.waiting_receives}]
      ),
      metric(
        "elixir_scope_cross_node_dropped_total",
        :counter,
        "Halves of messages crossing nodes given up.",
        [{p, x.dropped}]
      ),
      metric(
        "elixir_scope_cross_node_busy_seconds_total",
        :counter,
        "Time the link exchange's native steps took on this node.",
        [{p, x.busy_ns / 1.0e9}]
      )
    ]
  end

  defp bounds_ns, do: Enum.map(@bounds, &round(&1 * 1.0e9))

  defp trace_sessions do
    case Process.whereis(ElixirScope.Tracer.Supervisor) do
      nil -> 0
      sup -> DynamicSupervisor.count_children(sup).active
    end
  end

  defp label(server), do: inspect(server)

  defp metric(name, type, help, samples) do
    [
      "# HELP #{name} #{help}\n# TYPE #{name} #{type}\n",
      for({labels, value} <- samples, do: sample(name, labels, value))
    ]
  end

  defp histogram(name, help, labels, cumulative, count, sum) do
    buckets =
      Enum.zip(@bounds, cumulative)
      |> Enum.map(fn {le, n} -> sample(name <> "_bucket", labels ++ [le: le], n) end)

    [
      "# HELP #{name} #{help}\n# TYPE #{name} histogram\n",
      buckets,
      sample(name <> "_bucket", labels ++ [le: "+Inf"], count),
      sample(name <> "_sum", labels, sum),
      sample(name <> "_count", labels, count)
    ]
  end

  defp sample(name, [], value), do: [name, " ", number(value), "\n"]

  defp sample(name, labels, value) do
    pairs = Enum.map_join(labels, ",", fn {k, v} -> ~s(#{k}="#{escape(v)}") end)
    [name, "{", pairs, "} ", number(value), "\n"]
  end

  defp number(n) when is_integer(n), do: Integer.to_string(n)
  defp number(x) when is_float(x), do: :erlang.float_to_binary(x, [:short])

  # Label values: backslash, double quote and line feed are escaped.
  @doc false
  def escape(v) when is_float(v), do: number(v)

  def escape(v) do
    v
    |> to_string()
    |> String.replace("\\", "\\\\")
    |> String.replace(~s("), ~s(\\"))
    |> String.replace("\n", "\\n")
  end

  @doc """
  Serves `GET /metrics` over HTTP with OTP's `:inets` httpd. Options:
  `port:` (default 9568; `0` picks a free one), `ip:` (default
  `{127, 0, 0, 1}`), `pipeline:` (default the application's). Returns
  `{:ok, port}`, the port it listens on; `stop/1` stops it.
  """
  @spec serve(keyword()) :: {:ok, :inet.port_number()} | {:error, term()}
  def serve(opts \\ []) do
    port = Keyword.get(opts, :port, 9568)
    ip = Keyword.get(opts, :ip, {127, 0, 0, 1})
    pipeline = Keyword.get(opts, :pipeline, PipelineManager)

    unless is_integer(port) and port in 0..65_535,
      do: raise(ArgumentError, "port must be an integer in 0..65535, got: #{inspect(port)}")

    unless is_tuple(ip) and tuple_size(ip) in [4, 8],
      do: raise(ArgumentError, "ip must be an address tuple, got: #{inspect(ip)}")

    root = Path.join(System.tmp_dir!(), "elixir_scope_httpd") |> tap(&File.mkdir_p!/1)

    with {:ok, _} <- Application.ensure_all_started(:inets),
         {:ok, httpd} <-
           :inets.start(:httpd,
             port: port,
             bind_address: ip,
             server_name: ~c"elixir_scope",
             server_root: String.to_charlist(root),
             document_root: String.to_charlist(root),
             modules: [__MODULE__.Handler]
           ) do
      bound = Keyword.fetch!(:httpd.info(httpd, [:port]), :port)
      :persistent_term.put({__MODULE__.Handler, bound}, pipeline)
      {:ok, bound}
    end
  end

  @doc "Stops the endpoint `serve/1` started on `port`."
  @spec stop(:inet.port_number()) :: :ok | {:error, :not_serving}
  def stop(port) do
    served =
      Enum.find(:inets.services_info(), fn
        {:httpd, _pid, info} -> Keyword.get(info, :port) == port
        _ -> false
      end)

    case served do
      {:httpd, pid, _} ->
        :persistent_term.erase({__MODULE__.Handler, port})
        :inets.stop(:httpd, pid)

      _ ->
        {:error, :not_serving}
    end
  end

  defmodule Handler do
    @moduledoc false
    # The httpd callback module: GET /metrics answers the text; anything
    # else, 404.
    require Record
    Record.defrecordp(:mod, Record.extract(:mod, from_lib: "inets/include/httpd.hrl"))

    def unquote(:do)(mod_data) do
      uri = mod(mod_data, :request_uri)
      method = mod(mod_data, :method)
      port = mod(mod_data, :config_db) |> :httpd_util.lookup(:port)

      {code, type, body} =
        case {method, uri} do
          {~c"GET", ~c"/metrics" ++ _} ->
            pipeline = :persistent_term.get({__MODULE__, port}, PipelineManager)
            {200, ~c"text/plain; version=0.0.4", ElixirScope.Metrics.Prometheus.text(pipeline)}

          _ ->
            {404, ~c"text/plain", "not found\n"}
        end

      head = [
        code: code,
        content_type: type,
        content_length: Integer.to_charlist(byte_size(body))
      ]

      {:proceed, [response: {:response, head, body}]}
    end
  end
end
