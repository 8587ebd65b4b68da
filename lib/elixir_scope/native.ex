defmodule ElixirScope.Native do
  @moduledoc false
  # NIF stubs; the implementations live in native/elixir_scope_nif.
  @on_load :load_nif

  def load_nif do
    path = :filename.join(:code.priv_dir(:elixir_scope), ~c"native/elixir_scope_nif")
    # The loading process's pid lets the NIF check its term layout at load.
    :erlang.load_nif(path, self())
  end

  defp nif, do: :erlang.nif_error(:nif_not_loaded)

  def store_new(_max_events, _correlation), do: nif()
  def store_set_correlation(_store, _correlation), do: nif()
  def store_set_max_events(_store, _max_events), do: nif()
  def store_stats(_store), do: nif()
  def store_get(_store, _id), do: nif()
  def store_recent(_store, _n), do: nif()
  def store_by_pid(_store, _pid, _limit, _order), do: nif()
  def store_by_function(_store, _m, _f, _limit, _order), do: nif()
  def store_by_time(_store, _from, _to, _limit, _order), do: nif()
  def store_by_correlation(_store, _id), do: nif()
  def store_remove_before(_store, _before), do: nif()
  def store_write(_store, _events, _max_payload), do: nif()
  def store_trace_event(_store, _id), do: nif()
  def expand_compact(_compact, _node, _offset), do: nif()
  def cross_node_set_local(_store, _node), do: nif()
  def cross_node_forget_local(_store), do: nif()
  def cross_node_take_sends(_store, _to, _before), do: nif()
  def cross_node_link(_store, _inbound, _names, _settled), do: nif()
  def cross_node_link_back(_store, _node, _records), do: nif()
  def store_query(_store, _filter, _limit, _order), do: nif()
  def store_call_stat(_store, _filter, _key), do: nif()
  def store_ranges(_store, _filter, _max_depth, _limit), do: nif()
  def store_tracebacks(_store, _filter, _across, _limit), do: nif()
  def trace_save(_store, _filter, _path, _node, _saved_at, _saved_at_wall), do: nif()
  def trace_load(_path, _max_events, _partial), do: nif()

  def correlator_correlate(_store, _events, _max_payload), do: nif()
  def correlator_chain(_store, _id), do: nif()
  def correlator_link(_store, _from, _to, _kind), do: nif()
  def correlator_cleanup(_store), do: nif()
  def correlator_force_cleanup(_store, _older_than_ns), do: nif()
  def correlator_dump(_store), do: nif()
  def correlator_stats(_store), do: nif()
  def correlator_process_tree(_store), do: nif()

  def ring_new(_size, _overflow), do: nif()
  def ring_write(_ring, _event, _max_payload), do: nif()
  def ring_read_batch(_ring, _position, _count), do: nif()
  def ring_stats(_ring), do: nif()

  def pipeline_start(_store, _config, _rings), do: nif()
  def pipeline_update(_pipeline, _config), do: nif()
  def pipeline_stop(_pipeline), do: nif()
  def pipeline_store(_pipeline), do: nif()
  def pipeline_ingest(_pipeline, _event, _mode), do: nif()
  def pipeline_ingest_batch(_pipeline, _events, _mode, _first_index), do: nif()
  def pipeline_flush_targets(_pipeline), do: nif()
  def pipeline_flushed(_pipeline, _targets), do: nif()
  def pipeline_spawn_worker(_pipeline), do: nif()
  def pipeline_remove_worker(_pipeline, _id), do: nif()
  def pipeline_scale_workers(_pipeline, _n), do: nif()
  def pipeline_worker_ids(_pipeline), do: nif()
  def pipeline_worker_stats(_pipeline, _id), do: nif()
  def pipeline_stats(_pipeline), do: nif()
  def pipeline_set_shedding(_pipeline, _fraction), do: nif()
  def pipeline_latency_histogram(_pipeline, _bounds_ns), do: nif()
  def pipeline_metrics_tick(_pipeline), do: nif()
  def pipeline_dead_letters(_pipeline, _n), do: nif()
  def term_reads, do: nif()
  def native_logs_take(_max), do: nif()
  def struct_builds, do: nif()
  def store_select(_store, _query, _limit, _order), do: nif()
  def cursor_next(_cursor, _n), do: nif()
  def cursor_next_compact(_cursor, _n), do: nif()
  def pipeline_inject_fault(_pipeline, _fault), do: nif()

  # erl_tracer callbacks: this module is the tracer module of trace sessions.
  def enabled(_tag, _state, _tracee), do: nif()
  def trace(_tag, _state, _tracee, _message, _opts), do: nif()

  def trace_session_new(_pipeline, _owner, _config), do: nif()
  def trace_session_stop(_session, _reason), do: nif()
  def trace_session_info(_session), do: nif()
end
