defmodule Mix.Tasks.Compile.ElixirScopeNif do
  @moduledoc """
  Builds the Rust NIF with `cargo build --release` and installs it as
  `priv/native/elixir_scope_nif.so`.

  The library is copied to a temporary file and renamed into place, so a
  `.so` already loaded by a running VM is never overwritten in place.
  """
  use Mix.Task.Compiler

  @root __DIR__
  @lib "elixir_scope_nif"

  @impl true
  def run(_args) do
    target_dir = System.get_env("CARGO_TARGET_DIR") || Path.join(@root, "target")

    case System.cmd("cargo", ["build", "--release", "--quiet", "-p", @lib],
           cd: @root,
           stderr_to_stdout: true,
           into: IO.stream(:stdio, :line)
         ) do
      {_, 0} ->
        install(Path.join([target_dir, "release", "lib#{@lib}.so"]))
        Mix.Project.build_structure()
        {:ok, []}

      {_, status} ->
        Mix.shell().error("cargo build failed with status #{status}")
        {:error, []}
    end
  end

  defp install(built) do
    dest = Path.join([@root, "priv", "native", "#{@lib}.so"])
    File.mkdir_p!(Path.dirname(dest))

    unless File.exists?(dest) and File.read!(dest) == File.read!(built) do
      tmp = dest <> ".tmp#{System.unique_integer([:positive])}"
      File.cp!(built, tmp)
      File.rename!(tmp, dest)
    end
  end
end

defmodule ElixirScope.MixProject do
  use Mix.Project

  def project do
    [
      app: :elixir_scope,
      version: "0.1.0",
      elixir: "~> 1.14",
      compilers: [:elixir_scope_nif | Mix.compilers()],
      start_permanent: Mix.env() == :prod,
      elixirc_paths: elixirc_paths(Mix.env()),
      deps: [],
      docs: [main: "readme"]
    ]
  end

  def application do
    [
      extra_applications: [:logger, :inets],
      mod: {ElixirScope.Application, []}
    ]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]
end
