defmodule ElixirScope.Cluster.Session do
  @moduledoc """
  A trace session across nodes, as returned by `ElixirScope.Cluster.trace/1`.

  Fields: `id` (names the session's part on each node), `nodes` (where it
  started), `offsets` (`%{node => {offset_ns, error_ns}}`: that node's
  monotonic clock minus this one's, estimated at start; see
  `ElixirScope.Cluster.clock_offsets/1`), `started_at` (this node's
  monotonic ns) and `store_opts` (the `pipeline:` the session records
  into on every node).
  """

  @enforce_keys [:id, :nodes, :offsets, :started_at, :store_opts]
  defstruct @enforce_keys

  @type t :: %__MODULE__{
          id: reference(),
          nodes: [node()],
          offsets: %{node() => {integer(), non_neg_integer()}},
          started_at: integer(),
          store_opts: keyword()
        }

  defimpl Inspect do
    def inspect(s, _opts) do
      # Inspect answers within a second, whatever a node does.
      infos = ElixirScope.Cluster.trace_info(s, 1_000)

      {events, dropped, down} =
        Enum.reduce(infos, {0, 0, []}, fn
          {_, %{events: e, dropped: d}}, {te, td, down} -> {te + e, td + d, down}
          {node, {:error, _}}, {te, td, down} -> {te, td, [node | down]}
        end)

      down = if down == [], do: "", else: ", unreachable: #{Enum.join(Enum.sort(down), " ")}"

      "#ElixirScope.Cluster.Session<#{length(s.nodes)} nodes (#{Enum.join(s.nodes, " ")}), " <>
        "#{events} events, #{dropped} dropped#{down}>"
    end
  end
end
