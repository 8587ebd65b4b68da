defmodule ElixirScope.ClusterNodes do
  @moduledoc false
  # Local nodes for the cluster tests: this VM made a distributed node on
  # loopback (epmd started if it is not running), peers started with OTP's
  # `:peer`, this code path and this cookie.

  @doc "Makes this VM a distributed node named `prefix_N@127.0.0.1` if it is not one yet."
  def distribute!(prefix \\ "es_test") do
    unless Node.alive?() do
      {_, 0} = System.cmd("epmd", ["-daemon"])
      # Stopping a peer must not make `global` disconnect the others.
      Application.put_env(:kernel, :prevent_overlapping_partitions, false)
      name = :"#{prefix}_#{System.unique_integer([:positive])}@127.0.0.1"
      {:ok, _} = Node.start(name, :longnames)
    end

    :ok
  end

  @doc """
  Starts a peer node named `name` on loopback, linked to the caller,
  and with elixir_scope running unless `app: false`. Returns `{peer, node}`.
  """
  def start_peer(name, opts \\ []) do
    distribute!()
    paths = Enum.flat_map(:code.get_path(), &[~c"-pa", &1])
    cookie = Atom.to_charlist(Node.get_cookie())

    {:ok, peer, node} =
      :peer.start_link(%{
        name: :"#{name}_#{System.unique_integer([:positive])}",
        host: ~c"127.0.0.1",
        longnames: true,
        args: [
          ~c"-setcookie",
          cookie,
          ~c"-kernel",
          ~c"prevent_overlapping_partitions",
          ~c"false" | paths
        ]
      })

    # The peer's log lines would reach this VM's output (its group leader).
    {:ok, _} = :erpc.call(node, Application, :ensure_all_started, [:logger])
    :ok = :erpc.call(node, Logger, :configure, [[level: :warning]])

    if Keyword.get(opts, :app, true),
      do: {:ok, _} = :erpc.call(node, Application, :ensure_all_started, [:elixir_scope])

    {peer, node}
  end
end
