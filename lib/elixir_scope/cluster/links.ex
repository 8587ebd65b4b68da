defmodule ElixirScope.Cluster.Links do
  @moduledoc false
  # Matching sends on one node to receives on another (a pure function;
  # `ElixirScope.Cluster.link/1` collects the halves and applies the links).
  #
  # A send waits under its message fingerprint with where it went: the
  # receiver pid, `{:name, name, node}` for a send to `{name, node}`, or
  # `{:node, node}` for anything else addressed to a node (a process
  # alias: a `GenServer.call` reply); lists keep id order. A receive tries
  # its receiver's pid, then its registered name, then its node, and under
  # each takes the first send from its sender: the BEAM keeps order per
  # sender and receiver, so the k-th receive from a sender takes that
  # sender's k-th send.
  #
  # The VM does not name the sender of a message from another node (the
  # tracer records its node instead), so a receive's sender is mostly a
  # node. The match is certain (confidence 1.0) when the sends from that
  # node waiting under the key all come from one process (order per pair
  # makes the first one it), else `1 / n` with `n` such processes. A
  # receive that knows its sender's pid matches by pid at 1.0.

  @typedoc "A send across nodes: `{id, sender, to, fingerprint}`."
  @type send_half :: {pos_integer(), pid(), pid() | tuple(), integer()}
  @typedoc "A receive from another node: `{id, receiver, sender pid or node, fingerprint, name | nil}`."
  @type receive_half :: {pos_integer(), pid(), pid() | node(), integer(), atom() | nil}
  @typedoc "A link for `ElixirScope.Native.store_link_remote/2`."
  @type link :: {pos_integer(), :receives | :received_by, node(), pos_integer(), float() | nil}

  @doc """
  The links `%{node => [link]}` between the halves `%{node => {sends,
  receives}}` (each list in id order, as a node stores them), and how
  many receives were linked and left unlinked.
  """
  @spec match(%{node() => {[send_half()], [receive_half()]}}) ::
          {%{node() => [link()]}, %{linked: non_neg_integer(), unlinked: non_neg_integer()}}
  def match(halves) do
    # Sends wait by fingerprint (an integer key hashes fast); each entry
    # keeps where it went, its node, id and sender, in id order.
    waiting =
      for({node, {sends, _}} <- halves, send <- sends, do: {node, send})
      |> Enum.group_by(fn {_, {_, _, _, fp}} -> fp end, fn {node, {id, sender, to, _}} ->
        {to, node, id, sender}
      end)

    receives = for {node, {_, receives}} <- halves, r <- receives, do: {node, r}

    {links, _waiting, linked} =
      Enum.reduce(receives, {%{}, waiting, 0}, fn {node, r}, {links, waiting, linked} ->
        {id, _, _, _, _} = r

        case take(waiting, node, r) do
          {{send_node, send_id}, confidence, waiting} ->
            links =
              links
              |> add(node, {id, :receives, send_node, send_id, confidence})
              |> add(send_node, {send_id, :received_by, node, id, nil})

            {links, waiting, linked + 1}

          nil ->
            {links, waiting, linked}
        end
      end)

    {links, %{linked: linked, unlinked: length(receives) - linked}}
  end

  defp take(waiting, node, {_, receiver, sender, fp, name}) do
    case Map.get(waiting, fp) do
      nil ->
        nil

      # The common case: one send with this message waits.
      [{to, send_node, send_id, _} = only] ->
        if addressed?(to, receiver, name, node) and sent_by?(only, sender),
          do: {{send_node, send_id}, 1.0, Map.delete(waiting, fp)}

      sends ->
        keys = [receiver | if(name, do: [{:name, name, node}], else: [])] ++ [{:node, node}]
        Enum.find_value(keys, &take_first(waiting, fp, sends, &1, sender))
    end
  end

  defp addressed?(to, receiver, name, node),
    do: to == receiver or to == {:name, name, node} or to == {:node, node}

  defp take_first(waiting, fp, sends, to, sender) do
    case Enum.filter(sends, &(elem(&1, 0) == to and sent_by?(&1, sender))) do
      [] ->
        nil

      [{_, send_node, send_id, _} = first | _] = from_sender ->
        confidence = 1.0 / (from_sender |> Enum.uniq_by(&elem(&1, 3)) |> length())
        left = List.delete(sends, first)
        waiting = if left == [], do: Map.delete(waiting, fp), else: %{waiting | fp => left}
        {{send_node, send_id}, confidence, waiting}
    end
  end

  defp sent_by?({_, _, _, pid}, sender) when is_pid(sender), do: pid == sender
  defp sent_by?({_, node, _, _}, sender), do: node == sender

  defp add(links, node, link), do: Map.update(links, node, [link], &[link | &1])

  @doc "Where a send went, as `match/1` keys it, or nil when it stayed on this node."
  @spec destination(term()) :: pid() | tuple() | nil
  def destination(pid) when is_pid(pid), do: if(node(pid) != node(), do: pid)

  def destination({name, node}) when is_atom(name) and is_atom(node),
    do: if(node != node(), do: {:name, name, node})

  def destination(ref) when is_reference(ref), do: if(node(ref) != node(), do: {:node, node(ref)})
  def destination(_), do: nil

  @doc "A receive's sender when it came from another node (its pid or its node), else nil."
  @spec remote_sender(term()) :: pid() | node() | nil
  def remote_sender(pid) when is_pid(pid), do: if(node(pid) != node(), do: pid)

  def remote_sender(node) when is_atom(node) and node not in [nil, true, false],
    do: if(node != node(), do: node)

  def remote_sender(_), do: nil
end
