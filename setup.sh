#!/usr/bin/env bash
# Installs what is missing (Elixir/OTP and PropEr from Debian's packages;
# for the tests, Python's prometheus_client), then runs one job:
#   ./setup.sh demo    the demo on the default pipeline
#   ./setup.sh demo-cluster   the cluster demo (three local nodes)
#   ./setup.sh test    cargo test + mix test
#   ./setup.sh bench   bench/pipeline.exs
#   ./setup.sh bench-tracer   bench/tracer.exs
#   ./setup.sh bench-load     bench/load.exs
#   ./setup.sh bench-drain    native/elixir_scope_core/benches/drain.rs (one worker's drain rate)
#   ./setup.sh bench-analysis bench/analysis.exs
#   ./setup.sh bench-cluster  bench/cluster.exs (three local nodes)
#   ./setup.sh bench-exchange native/elixir_scope_core/benches/exchange.rs (a link round's native cost)
set -euo pipefail
cd "$(dirname "$0")"

need=()
command -v elixir >/dev/null 2>&1 || need+=(elixir)
command -v erl >/dev/null 2>&1 || need+=(erlang-dev)
[ -d "$(ls -d /usr/lib/erlang/lib/proper-* 2>/dev/null | head -n1)" ] || need+=(erlang-proper)
[ -d "$(ls -d /usr/lib/erlang/lib/tools-* 2>/dev/null | head -n1)" ] || need+=(erlang-tools)
[ -d "$(ls -d /usr/lib/erlang/lib/runtime_tools-* 2>/dev/null | head -n1)" ] || need+=(erlang-runtime-tools)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
    elixir erlang-dev erlang-tools erlang-runtime-tools erlang-dialyzer erlang-proper >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "Rust (cargo) is required: https://rustup.rs" >&2; exit 1; }
export MIX_HOME="${MIX_HOME:-$PWD/_build/mix_home}"

# The tests check the Prometheus output with a real parser (prometheus_client).
python_parser() {
  python3 -c 'import prometheus_client' 2>/dev/null && return
  python3 -m pip install --quiet prometheus_client 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages prometheus_client
}

case "${1:-}" in
  demo) exec mix run bench/demo.exs ;;
  demo-cluster) exec mix run bench/demo_cluster.exs ;;
  test) python_parser && cargo test --workspace && mix test ;;
  bench) shift; exec env MIX_ENV=prod mix run bench/pipeline.exs "$@" ;;
  bench-tracer) shift; exec env MIX_ENV=prod mix run bench/tracer.exs "$@" ;;
  bench-load) shift; exec env MIX_ENV=prod mix run bench/load.exs "$@" ;;
  bench-drain) exec cargo bench -p elixir_scope_core --bench drain ;;
  bench-analysis) shift; exec env MIX_ENV=prod mix run bench/analysis.exs "$@" ;;
  bench-cluster) shift; exec env MIX_ENV=prod mix run bench/cluster.exs "$@" ;;
  bench-exchange) exec cargo bench -p elixir_scope_core --bench exchange ;;
  *) echo "usage: $0 demo|demo-cluster|test|bench|bench-tracer|bench-load|bench-drain|bench-analysis|bench-cluster|bench-exchange" >&2; exit 2 ;;
esac
