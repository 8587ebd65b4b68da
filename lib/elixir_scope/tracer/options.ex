defmodule ElixirScope.Tracer.Options do
  @moduledoc false
  # Validates and normalizes the options of `ElixirScope.trace/1`.

  @defaults %{
    pids: nil,
    descendants: false,
    calls: [],
    messages: false,
    procs: false,
    payloads: :full,
    max_events: 100_000,
    rate_limit: nil,
    duration_ms: 60_000,
    allow_all: false,
    owner: nil,
    pipeline: ElixirScope.Capture.PipelineManager
  }

  @type t :: %{
          pids: pid() | [pid()] | :new | :existing | :all,
          descendants: boolean(),
          calls: :all | [{module(), atom(), non_neg_integer() | :_}],
          messages: boolean(),
          procs: boolean(),
          payloads: :full | :none | pos_integer(),
          max_events: pos_integer(),
          rate_limit: nil | {pos_integer(), pos_integer()},
          duration_ms: pos_integer(),
          allow_all: boolean(),
          owner: pid(),
          pipeline: GenServer.server()
        }

  @doc "Normalized options, or the first problem found."
  @spec parse(keyword()) :: {:ok, t()} | {:error, term()}
  def parse(opts) when is_list(opts) do
    with true <- Keyword.keyword?(opts) || {:error, {:invalid_options, opts}},
         {:ok, o} <- merge(opts),
         true <- o.pids != nil || {:error, {:missing_option, :pids}},
         :ok <- check_each(o),
         {:ok, calls} <- normalize_calls(o.calls),
         o = %{o | calls: calls, owner: o.owner || self()},
         :ok <- check_something_traced(o) do
      check_breadth(o)
    end
  end

  def parse(opts), do: {:error, {:invalid_options, opts}}

  defp merge(opts) do
    Enum.reduce_while(opts, {:ok, @defaults}, fn {k, v}, {:ok, acc} ->
      if Map.has_key?(@defaults, k),
        do: {:cont, {:ok, Map.put(acc, k, v)}},
        else: {:halt, {:error, {:unknown_option, k}}}
    end)
  end

  defp check_each(o) do
    Enum.find_value(o, :ok, fn {k, v} ->
      if valid?(k, v), do: nil, else: {:error, {:invalid_option, k, v}}
    end)
  end

  defp valid?(:pids, p) when p in [:new, :existing, :all], do: true
  defp valid?(:pids, p) when is_pid(p), do: node(p) == node()
  defp valid?(:pids, [_ | _] = ps), do: Enum.all?(ps, &(is_pid(&1) and node(&1) == node()))
  defp valid?(:pids, _), do: false
  defp valid?(k, v) when k in [:descendants, :messages, :procs, :allow_all], do: is_boolean(v)
  defp valid?(:calls, c), do: c == :all or is_list(c)
  defp valid?(:payloads, p), do: p in [:full, :none] or (is_integer(p) and p > 0)
  defp valid?(k, v) when k in [:max_events, :duration_ms], do: is_integer(v) and v > 0
  defp valid?(:rate_limit, nil), do: true

  defp valid?(:rate_limit, {n, ms}),
    do: is_integer(n) and n > 0 and is_integer(ms) and ms > 0

  defp valid?(:rate_limit, _), do: false
  defp valid?(:owner, o), do: is_nil(o) or is_pid(o)
  defp valid?(:pipeline, _), do: true

  defp normalize_calls(:all), do: {:ok, :all}

  defp normalize_calls(calls) do
    Enum.reduce_while(calls, {:ok, []}, fn c, {:ok, acc} ->
      case pattern(c) do
        {:ok, p} -> {:cont, {:ok, [p | acc]}}
        :error -> {:halt, {:error, {:invalid_option, :calls, c}}}
      end
    end)
    |> case do
      {:ok, ps} -> {:ok, ps |> Enum.reverse() |> Enum.uniq()}
      error -> error
    end
  end

  defp pattern(m) when is_atom(m) and m not in [nil, true, false, :_], do: {:ok, {m, :_, :_}}

  defp pattern({m, f, a} = p)
       when is_atom(m) and m != :_ and is_atom(f) and
              (a == :_ or (is_integer(a) and a >= 0 and a < 256)),
       do: {:ok, p}

  defp pattern(_), do: :error

  defp check_something_traced(%{calls: [], messages: false, procs: false}),
    do: {:error, :nothing_to_trace}

  defp check_something_traced(_), do: :ok

  # All (or all new) processes times all functions would trace the whole
  # VM, the footgun that dbg leaves loaded.
  defp check_breadth(%{pids: p, calls: :all, allow_all: false}) when is_atom(p),
    do: {:error, {:too_broad, "all processes x all functions; pass allow_all: true to insist"}}

  defp check_breadth(o), do: {:ok, o}
end
