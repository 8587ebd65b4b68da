defmodule ElixirScope.Capture.RingBuffer do
  @moduledoc """
  A native, bounded, lock-free ring of events.

  Any process may `write/2` concurrently; a full ring applies its
  `overflow_strategy` (`:drop_newest` rejects the new event,
  `:drop_oldest` overwrites the oldest) and counts every drop. Hand rings
  to a pipeline with `PipelineManager.start_link(buffers: [ring])` and its
  workers drain them into the store.

  `read_batch/3` consumes events. Positions count events since the ring was
  created: `write_position` = events accepted, `read_position` = events
  read or overwritten.
  """

  alias ElixirScope.{Event, Native}

  @enforce_keys [:ref, :size, :overflow_strategy]
  defstruct [:ref, :size, :overflow_strategy, max_payload_bytes: 4096]

  @type t :: %__MODULE__{
          ref: reference(),
          size: pos_integer(),
          overflow_strategy: :drop_oldest | :drop_newest,
          max_payload_bytes: pos_integer()
        }

  @type stats :: %{
          size: pos_integer(),
          write_position: non_neg_integer(),
          read_position: non_neg_integer(),
          available: non_neg_integer(),
          total_writes: non_neg_integer(),
          total_reads: non_neg_integer(),
          dropped_events: non_neg_integer(),
          utilization: float()
        }

  @doc """
  Creates a ring. Options: `size` (power of 2, default 1024),
  `overflow_strategy` (`:drop_newest` default, or `:drop_oldest`),
  `max_payload_bytes` (default 4096).
  """
  @spec new(keyword()) ::
          {:ok, t()}
          | {:error, :size_must_be_power_of_2 | :invalid_size | :invalid_overflow_strategy}
  def new(opts \\ [])

  def new(opts) when not is_list(opts),
    do: raise(ArgumentError, "options must be a keyword list, got: #{inspect(opts)}")

  def new(opts) do
    unless Keyword.keyword?(opts),
      do: raise(ArgumentError, "options must be a keyword list, got: #{inspect(opts)}")

    size = Keyword.get(opts, :size, 1024)
    overflow = Keyword.get(opts, :overflow_strategy, :drop_newest)
    max_payload = Keyword.get(opts, :max_payload_bytes, 4096)

    cond do
      not is_integer(size) or size <= 0 -> {:error, :invalid_size}
      overflow not in [:drop_newest, :drop_oldest] -> {:error, :invalid_overflow_strategy}
      not is_integer(max_payload) or max_payload <= 0 -> {:error, :invalid_max_payload_bytes}
      true -> create(size, overflow, max_payload)
    end
  end

  defp create(size, overflow, max_payload) do
    with {:ok, ref} <- Native.ring_new(size, overflow) do
      {:ok,
       %__MODULE__{
         ref: ref,
         size: size,
         overflow_strategy: overflow,
         max_payload_bytes: max_payload
       }}
    end
  end

  @doc "Writes one event (an `%Event{}` or the compact tuple form)."
  @spec write(t(), Event.t() | Event.compact()) ::
          :ok | {:error, :buffer_full} | {:error, {:invalid_event, term()}}
  def write(%__MODULE__{ref: ref, max_payload_bytes: max}, event),
    do: Native.ring_write(ref, event, max)

  @doc """
  Consumes up to `count` events. `position` is the reader's last position:
  `new_position - position - length(events)` events were dropped or taken
  by another reader since then.
  """
  @spec read_batch(t(), non_neg_integer(), non_neg_integer()) :: {[Event.t()], non_neg_integer()}
  def read_batch(%__MODULE__{ref: ref}, position, count)
      when is_integer(position) and position >= 0 and is_integer(count) and count >= 0,
      do: Native.ring_read_batch(ref, position, count)

  def read_batch(%__MODULE__{}, position, count),
    do:
      raise(
        ArgumentError,
        "position and count must be non-negative integers, got: #{inspect(position)}, #{inspect(count)}"
      )

  @doc "Counters: positions, totals, drops and utilization (0.0..1.0)."
  @spec stats(t()) :: stats()
  def stats(%__MODULE__{ref: ref}), do: Native.ring_stats(ref)

  defimpl Inspect do
    def inspect(ring, _opts) do
      s = ElixirScope.Capture.RingBuffer.stats(ring)

      "#RingBuffer<size: #{s.size}, available: #{s.available}, dropped: #{s.dropped_events}, " <>
        "#{ring.overflow_strategy}>"
    end
  end
end
