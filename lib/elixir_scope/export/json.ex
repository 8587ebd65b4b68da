defmodule ElixirScope.Export.JSON do
  @moduledoc false
  # A small JSON encoder for the exports (no JSON library is available:
  # hex is not reachable). Maps with atom or string keys, lists, strings,
  # numbers, booleans and nil map to JSON; any other term becomes the
  # string of its `inspect/1`.

  @specials [~s("), "\\" | Enum.map(0..0x1F, &<<&1>>)]
  @pattern {__MODULE__, :specials}

  @spec encode(term()) :: iodata()
  def encode(nil), do: "null"
  def encode(true), do: "true"
  def encode(false), do: "false"
  def encode(n) when is_integer(n), do: Integer.to_string(n)
  def encode(x) when is_float(x), do: :erlang.float_to_binary(x, [:short])
  def encode(a) when is_atom(a), do: string(Atom.to_string(a))

  def encode(s) when is_binary(s) do
    if String.valid?(s), do: string(s), else: string(inspect(s))
  end

  def encode(list) when is_list(list) do
    if List.improper?(list),
      do: string(inspect(list)),
      else: ["[", Enum.intersperse(Enum.map(list, &encode/1), ","), "]"]
  end

  def encode(%{__struct__: _} = struct), do: string(inspect(struct))

  def encode(map) when is_map(map) do
    pairs = for {k, v} <- map, do: [key(k), ":", encode(v)]
    ["{", Enum.intersperse(pairs, ","), "}"]
  end

  def encode(other), do: string(inspect(other, limit: :infinity, printable_limit: :infinity))

  defp key(k) when is_binary(k), do: string(k)
  defp key(k) when is_atom(k), do: string(Atom.to_string(k))
  defp key(k), do: string(inspect(k))

  @doc "A JSON string of the UTF-8 binary `s`."
  def string(s), do: [?", escape(s), ?"]

  @doc "A JSON object of `{key, json}` pairs, keys plain names (not escaped)."
  def object(pairs) do
    ["{", Enum.intersperse(for({k, v} <- pairs, do: [?", k, ?", ?:, v]), ","), "}"]
  end

  # Most strings need no escape: checked at once (with a pattern compiled
  # once per VM), then copied as they are.
  defp escape(s) do
    if :binary.match(s, specials()) == :nomatch, do: s, else: escape_each(s)
  end

  defp specials do
    case :persistent_term.get(@pattern, nil) do
      nil -> tap(:binary.compile_pattern(@specials), &:persistent_term.put(@pattern, &1))
      pattern -> pattern
    end
  end

  defp escape_each(s) do
    for <<c::utf8 <- s>>, into: "" do
      case c do
        ?" -> "\\\""
        ?\\ -> "\\\\"
        ?\n -> "\\n"
        ?\r -> "\\r"
        ?\t -> "\\t"
        c when c < 0x20 -> "\\u" <> String.pad_leading(Integer.to_string(c, 16), 4, "0")
        c -> <<c::utf8>>
      end
    end
  end
end
