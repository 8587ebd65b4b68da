defmodule ElixirScope.Tracer.Server do
  @moduledoc false
  # One trace session's Elixir side. It sets the trace flags and patterns
  # (the native session resource is the tracer state), then waits for the
  # session to end: a limit tripped natively ({:elixir_scope_trace_stopped,
  # reason}), the duration timer, the owner's death, or stop/1. On any end
  # it stops the native session (first reason wins), removes its flags from
  # every process still carrying this tracer and clears its patterns, then
  # exits. Registered under its module name: one session at a time, as
  # recon_trace and redbug.

  use GenServer, restart: :temporary

  alias ElixirScope.Capture.PipelineManager
  alias ElixirScope.Native
  alias ElixirScope.Tracer.Session

  @call_match_spec [{:_, [], [{:exception_trace}]}]
  # The receive match spec that hands the sender to the tracer: its pid,
  # or its node when the VM does not name a remote sender (it gives
  # `undefined` for messages from other nodes).
  @receive_match_spec [
    {[:_, :"$1", :_], [{:is_pid, :"$1"}], [{:message, :"$1"}]},
    {[:"$1", :_, :_], [{:"=/=", :"$1", {:node}}], [{:message, :"$1"}]},
    {:_, [], [{:message, :undefined}]}
  ]

  @doc false
  # The match specs sessions install (bench/tracer.exs gives its floor the same).
  def match_specs, do: %{call: @call_match_spec, receive: @receive_match_spec}

  def start_link(options),
    do: GenServer.start_link(__MODULE__, options, name: __MODULE__)

  @doc "Ends the session with `reason` and waits until it is cleaned up."
  def stop(server, reason) do
    GenServer.call(server, {:stop, reason})
  catch
    # Already gone: the session had ended and cleaned up.
    :exit, _ -> :ok
  end

  @impl true
  def init(o) do
    Process.flag(:trap_exit, true)
    pipeline = PipelineManager.pipeline(o.pipeline)
    servers = server_modules(o.calls)

    ref =
      Native.trace_session_new(pipeline, self(), %{
        max_events: o.max_events,
        rate_events: if(o.rate_limit, do: elem(o.rate_limit, 0), else: 0),
        rate_window_ms: if(o.rate_limit, do: elem(o.rate_limit, 1), else: 0),
        duration_ms: o.duration_ms,
        payload_bytes: payload_bytes(o.payloads, o.pipeline),
        excluded: own_processes(),
        servers: servers,
        count_only: false
      })

    state = %{ref: ref, options: o, patterns: [], cleaned: false}

    with :ok <- check_free(o.pids),
         {:ok, patterns} <- set_patterns(o),
         state = %{state | patterns: patterns},
         :ok <- set_flags(o, ref, state) do
      Process.monitor(o.owner)
      Process.send_after(self(), {:duration, ref}, o.duration_ms)

      session = %Session{
        ref: ref,
        server: self(),
        owner: o.owner,
        options: o,
        started_at: System.monotonic_time(:nanosecond)
      }

      {:ok, Map.put(state, :session, session)}
    else
      {:error, reason} ->
        cleanup(state, :requested)
        {:stop, reason}
    end
  end

  @impl true
  def handle_call(:session, _from, state), do: {:reply, state.session, state}

  def handle_call({:stop, reason}, _from, state),
    do: {:stop, :normal, :ok, cleanup(state, reason)}

  @impl true
  def handle_info({:elixir_scope_trace_stopped, reason}, state), do: finish(state, reason)
  def handle_info({:duration, ref}, %{ref: ref} = state), do: finish(state, :duration)

  def handle_info({:DOWN, _, :process, owner, _}, %{options: %{owner: owner}} = state),
    do: finish(state, :owner_down)

  def handle_info(_other, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, state), do: cleanup(state, :requested)

  defp finish(state, reason), do: {:stop, :normal, cleanup(state, reason)}

  defp cleanup(%{cleaned: true} = state, _reason), do: state

  defp cleanup(state, reason) do
    Native.trace_session_stop(state.ref, reason)
    me = {Native, state.ref}

    if state.options.pids in [:new, :all] and
         :erlang.trace_info(:new, :tracer) == {:tracer, me},
       do: :erlang.trace(:new, false, [:all])

    for pid <- Process.list(), :erlang.trace_info(pid, :tracer) == {:tracer, me} do
      # The process may exit between the check and the call.
      try do
        :erlang.trace(pid, false, [:all])
      rescue
        ArgumentError -> :ok
      end
    end

    for pattern <- state.patterns, do: :erlang.trace_pattern(pattern, false, [:local])
    if state.options.messages, do: :erlang.trace_pattern(:receive, true, [])
    if Map.has_key?(state, :session), do: stopped(state.session)
    %{state | cleaned: true}
  end

  # The `[:elixir_scope, :trace, :stop]` event of a session that ran.
  defp stopped(session) do
    info = Native.trace_session_info(session.ref)
    ms = (System.monotonic_time(:nanosecond) - session.started_at) / 1_000_000

    ElixirScope.Telemetry.execute(
      [:elixir_scope, :trace, :stop],
      %{events: info.events, dropped: info.dropped, duration_ms: ms},
      %{pipeline: session.options.pipeline, reason: info.stopped_because, session: session}
    )
  end

  # Another tool's tracer on a process we would trace: refuse, never take over.
  defp check_free(pids) do
    Enum.find_value(targets(pids), :ok, fn target ->
      case :erlang.trace_info(target, :tracer) do
        {:tracer, []} -> nil
        {:tracer, other} -> {:error, {:already_traced, target, other}}
        :undefined -> {:error, {:no_such_process, target}}
      end
    end)
  end

  defp targets(:all), do: [:new | Process.list()]
  defp targets(:existing), do: Process.list()
  defp targets(pids), do: List.wrap(pids)

  defp set_patterns(%{calls: []}), do: {:ok, []}

  defp set_patterns(%{calls: :all}) do
    :erlang.trace_pattern({:_, :_, :_}, @call_match_spec, [:local])
    {:ok, [{:_, :_, :_}]}
  end

  defp set_patterns(%{calls: calls}) do
    Enum.reduce_while(calls, {:ok, []}, fn {m, _, _} = p, {:ok, set} ->
      with {:module, ^m} <- Code.ensure_loaded(m),
           n when n > 0 <- :erlang.trace_pattern(p, @call_match_spec, [:local]) do
        {:cont, {:ok, [p | set]}}
      else
        {:error, _} -> halt_unset(set, {:module_not_found, m})
        0 -> halt_unset(set, {:no_functions_match, p})
      end
    end)
  end

  defp halt_unset(set, reason) do
    for p <- set, do: :erlang.trace_pattern(p, false, [:local])
    {:halt, {:error, reason}}
  end

  # On failure the patterns already set are cleared here: the caller's
  # cleanup only knows the state from before they were set.
  defp set_flags(o, ref, state) do
    if o.messages, do: :erlang.trace_pattern(:receive, @receive_match_spec, [])

    flags =
      [{:tracer, Native, ref}] ++
        if(o.calls != [], do: [:call], else: []) ++
        if(o.messages, do: [:send, :receive], else: []) ++
        if(o.procs, do: [:procs], else: []) ++
        if o.descendants, do: [:set_on_spawn], else: []

    Enum.find_value(List.wrap(o.pids), :ok, fn target ->
      try do
        :erlang.trace(target, true, flags)
        nil
      rescue
        ArgumentError ->
          cleanup(state, :requested)
          {:error, {:no_such_process, target}}
      end
    end)
  end

  # Modules of the call patterns that implement GenServer (their callbacks
  # yield :state_change events).
  defp server_modules(:all), do: []

  defp server_modules(calls) do
    for {m, _, _} <- calls, Code.ensure_loaded?(m), gen_server?(m), uniq: true, do: m
  end

  defp gen_server?(m) do
    m.module_info(:attributes)
    |> Keyword.get_values(:behaviour)
    |> List.flatten()
    |> Enum.any?(&(&1 in [GenServer, :gen_server]))
  end

  defp payload_bytes(:none, _), do: nil
  defp payload_bytes(n, _) when is_integer(n), do: n

  defp payload_bytes(:full, pipeline),
    do: PipelineManager.get_config(pipeline).capture.max_payload_bytes

  # The pipeline's own processes (the application's supervision tree) and
  # this server are never traced.
  defp own_processes do
    tree =
      case Process.whereis(ElixirScope.Supervisor) do
        nil -> []
        sup -> supervised(sup)
      end

    [self() | tree]
  end

  # (Not asking the tracer supervisor: it is busy starting this server.)
  defp supervised(sup) do
    children =
      for {id, pid, type, _} <- Supervisor.which_children(sup), is_pid(pid) do
        if type == :supervisor and id != ElixirScope.Tracer.Supervisor,
          do: [pid | supervised(pid)],
          else: [pid]
      end

    [sup | List.flatten(children)]
  end
end
