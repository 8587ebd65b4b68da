defmodule ElixirScope.ApplicationTest do
  use ExUnit.Case

  import ElixirScope.TestEvents

  defp threads, do: length(File.ls!("/proc/self/task"))

  defp rss_mb do
    [kb] =
      Regex.run(~r/VmRSS:\s+(\d+) kB/, File.read!("/proc/self/status"), capture: :all_but_first)

    String.to_integer(kb) / 1024
  end

  defp restart_with_traffic do
    ExUnit.CaptureLog.capture_log(fn -> :ok = Application.stop(:elixir_scope) end)
    {:ok, _} = Application.ensure_all_started(:elixir_scope)
    {:ok, 10_000} = ElixirScope.ingest_batch(for(i <- 1..10_000, do: call(self(), [i])))
    :ok = ElixirScope.flush()
  end

  test "restarting the application leaks no threads and no memory" do
    restart_with_traffic()
    :erlang.garbage_collect()
    eventually(fn -> threads() == threads() end)
    {threads_before, rss_before} = {threads(), rss_mb()}

    for _ <- 1..5, do: restart_with_traffic()
    for pid <- Process.list(), do: :erlang.garbage_collect(pid)

    # Stopped workers exit within their idle sleep.
    eventually(fn -> threads() <= threads_before end)
    assert rss_mb() - rss_before < 64, "#{rss_mb() - rss_before} MB more after 5 restarts"
    assert ElixirScope.stats().stored == 10_000, "a fresh store after each restart"
  end

  test "a release's config change applies live keys to the default pipeline and logs fixed ones" do
    alias ElixirScope.Capture.PipelineManager
    before = Application.get_env(:elixir_scope, :layer2)
    on_exit(fn -> restore_layer2(before) end)

    Application.put_env(:elixir_scope, :layer2, processing: [batch_size: 321])

    assert ElixirScope.Application.config_change(
             [layer2: [processing: [batch_size: 321]]],
             [],
             []
           ) == :ok

    assert PipelineManager.get_config().processing.batch_size == 321

    Application.put_env(:elixir_scope, :layer2, capture: [ring_size: 64])

    log =
      ExUnit.CaptureLog.capture_log(fn ->
        assert ElixirScope.Application.config_change([layer2: [capture: [ring_size: 64]]], [], []) ==
                 :ok
      end)

    assert log =~ "restart_required"
    assert PipelineManager.get_config().capture.ring_size == 32_768
  end

  test "metrics.prometheus_port serves /metrics with the application, and stopping it stops that" do
    before = Application.get_env(:elixir_scope, :layer2)

    on_exit(fn ->
      # Stopped already, unless the test failed half-way.
      ExUnit.CaptureLog.capture_log(fn -> Application.stop(:elixir_scope) end)
      restore_layer2_env(before)
      {:ok, _} = Application.ensure_all_started(:elixir_scope)
    end)

    Application.put_env(:elixir_scope, :layer2, metrics: [prometheus_port: 0])
    ExUnit.CaptureLog.capture_log(fn -> :ok = Application.stop(:elixir_scope) end)
    {:ok, _} = Application.ensure_all_started(:elixir_scope)
    port = ElixirScope.Application.prometheus_port()
    assert is_integer(port) and port > 0
    url = ~c"http://127.0.0.1:#{port}/metrics"
    {:ok, {{_, 200, _}, _, body}} = :httpc.request(:get, {url, []}, [], [])
    assert to_string(body) =~ "elixir_scope_layer2_events_processed_total"

    ExUnit.CaptureLog.capture_log(fn -> :ok = Application.stop(:elixir_scope) end)
    assert ElixirScope.Application.prometheus_port() == nil
    assert {:error, _} = :httpc.request(:get, {url, []}, [], [])
  end

  defp restore_layer2_env(before) do
    if before,
      do: Application.put_env(:elixir_scope, :layer2, before),
      else: Application.delete_env(:elixir_scope, :layer2)
  end

  defp restore_layer2(before) do
    restore_layer2_env(before)
    {:ok, config} = ElixirScope.Config.Layer2.from_env()
    :ok = ElixirScope.Capture.PipelineManager.update_config(config)
  end
end
