defmodule ElixirScope.CorrelatedEvent do
  @moduledoc """
  A stored event with its correlation metadata (guide §4.1).

  `correlation_id`, `parent_id`, `root_id` and link targets are event ids;
  a link to an event on another node (`ElixirScope.Cluster.link/1`) names
  it `{node, id}`: `{:receives, {node, send_id}}` on a receive,
  `{:received_by, {node, receive_id}}` on its send. Fields stay `nil` /
  `[]` until a correlator has seen the event.
  """

  alias ElixirScope.Event

  @type link_type ::
          :called_from | :completes | :receives | :spawned_by | :caused_by | :received_by

  @type t :: %__MODULE__{
          event: Event.t(),
          correlation_id: pos_integer() | nil,
          parent_id: pos_integer() | nil,
          root_id: pos_integer() | nil,
          links: [{link_type(), pos_integer() | {node(), pos_integer()}}],
          correlation_type: Event.event_type() | nil,
          correlated_at: integer() | nil,
          correlation_confidence: float() | nil
        }

  defstruct event: nil,
            correlation_id: nil,
            parent_id: nil,
            root_id: nil,
            links: [],
            correlation_type: nil,
            correlated_at: nil,
            correlation_confidence: nil
end
