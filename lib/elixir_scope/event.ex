defmodule ElixirScope.Event do
  @moduledoc """
  One captured event.

  `id` is assigned at ingest (positive, unique per store, increasing in
  ingest order); leave it `nil` when building an event. `timestamp`
  (`System.monotonic_time(:nanosecond)`) and `wall_time`
  (`System.os_time(:nanosecond)`) are stamped at ingest when `nil`.

  | type                   | data                      | peer                         |
  |------------------------|---------------------------|------------------------------|
  | `:function_call`       | arguments (list)          | —                            |
  | `:function_return`     | return value              | —                            |
  | `:function_exception`  | `{class, reason}`         | —                            |
  | `:message_send`        | message                   | destination pid or name (1)  |
  | `:message_receive`     | message                   | sender when known, else nil  |
  | `:process_spawn`       | `{m, f, args}`            | child pid (`pid` is parent)  |
  | `:process_exit`        | reason                    | —                            |
  | `:process_link`        | —                         | linked pid                   |
  | `:state_change`        | `%{old: old, new: new}`   | —                            |
  | `:error`, `:custom`    | anything                  | anything                     |

  (1) A traced send to a name registered on this node (`name` or
  `{name, node()}`) has `{name, pid}`: the name and the process that held
  it when the message was sent (as looked up at most a millisecond
  earlier), which is the one its receive is paired with.

  Payloads (`data`, `peer`) larger than `max_payload_bytes` are stored as
  `{:truncated, byte_size, hint}`.

  For hot paths, `ElixirScope.ingest_batch/1` also takes the compact tuple
  `{type, pid, module, function, arity, data, peer}` (use `nil` for unused
  fields); it is stamped at ingest.
  """

  @types [
    :function_call,
    :function_return,
    :function_exception,
    :message_send,
    :message_receive,
    :process_spawn,
    :process_exit,
    :process_link,
    :state_change,
    :error,
    :custom
  ]

  @type event_type ::
          :function_call
          | :function_return
          | :function_exception
          | :message_send
          | :message_receive
          | :process_spawn
          | :process_exit
          | :process_link
          | :state_change
          | :error
          | :custom

  @type t :: %__MODULE__{
          id: pos_integer() | nil,
          type: event_type(),
          pid: pid(),
          timestamp: integer() | nil,
          wall_time: integer() | nil,
          module: module() | nil,
          function: atom() | nil,
          arity: 0..254 | nil,
          data: term(),
          peer: term()
        }

  @typedoc "The compact tuple form accepted by ingest functions."
  @type compact ::
          {event_type(), pid(), module() | nil, atom() | nil, 0..254 | nil, term(), term()}

  defstruct [
    :id,
    :type,
    :pid,
    :timestamp,
    :wall_time,
    :module,
    :function,
    :arity,
    :data,
    :peer
  ]

  @doc "All event types."
  @spec types() :: [event_type()]
  def types, do: @types

  defimpl Inspect do
    import Inspect.Algebra

    def inspect(event, opts) do
      mfa =
        case event do
          %{module: nil, function: nil} -> []
          %{module: m, function: f, arity: nil} -> [" ", Kernel.inspect(m), ".#{f}"]
          %{module: m, function: f, arity: a} -> [" ", Kernel.inspect(m), ".#{f}/#{a}"]
        end

      head =
        IO.iodata_to_binary([
          "#Event<#{event.id || "new"} #{event.type} ",
          Kernel.inspect(event.pid),
          mfa
        ])

      concat([
        head,
        " data: ",
        to_doc(event.data, opts),
        if(event.peer == nil, do: "", else: concat([" peer: ", to_doc(event.peer, opts)])),
        ">"
      ])
    end
  end
end
