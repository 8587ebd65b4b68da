defmodule ElixirScope.Store do
  @moduledoc """
  A store loaded from a saved trace (`ElixirScope.load/2`). Every
  `ElixirScope.Storage.DataAccess`, `ElixirScope.Query` and
  `ElixirScope.Export` function reads it when given `store: store`.

  Fields: `path`, `node` (where it was saved), `saved_at` (monotonic ns
  on that node: the clock base of its timestamps), `events` loaded, and
  `lost` (events in frames that could not be read, with `partial: true`).
  """

  @enforce_keys [:ref, :path, :node, :saved_at, :events, :lost]
  defstruct @enforce_keys

  @type t :: %__MODULE__{
          ref: reference(),
          path: Path.t(),
          node: String.t(),
          saved_at: integer(),
          events: non_neg_integer(),
          lost: non_neg_integer()
        }

  defimpl Inspect do
    def inspect(s, _opts) do
      lost = if s.lost > 0, do: ", #{s.lost} lost", else: ""
      "#ElixirScope.Store<#{s.path}: #{s.events} events from #{s.node}#{lost}>"
    end
  end
end
