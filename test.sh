#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the tests need when it is missing:
#   Debian packages: redis-server and redis-tools (the real Redis 7.0 the tests compare
#                    against, redis-cli and redis-benchmark), kcat (the Kafka client the
#                    minilog suites drive, with librdkafka 2.0.2), nats-server (for the
#                    side-by-side benchmarks), beanstalkd (the real beanstalkd 1.12 the
#                    miniqueue differential tests compare against), python3 and python3-venv;
#   PyPI packages:   redis (redis-py), pytest, confluent-kafka, kafka-python and greenstalk
#                    (the beanstalk client the miniqueue suites drive), in a virtualenv at
#                    .venv-tests/ (minilog's Rust crash test uses it too).
# It works as root on a fresh Debian machine. Elsewhere it says what is missing and stops.
#
# Usage: ./test.sh            everything (what CI runs through .ci/run)
#        ./test.sh --rust     only the Rust tests
#        ./test.sh --python   only the Python (redis-py, redis-cli, differential, Kafka client,
#                             greenstalk and beanstalkd differential) tests
set -euo pipefail
cd "$(dirname "$0")"

want_rust=1
want_python=1
case "${1:-}" in
  --rust) want_python=0 ;;
  --python) want_rust=0 ;;
  "") ;;
  *) echo "usage: $0 [--rust|--python]" >&2; exit 2 ;;
esac

say() { printf '\n==> %s\n' "$*"; }

# ---- system packages -------------------------------------------------------
missing_debs=()
command -v redis-server >/dev/null 2>&1 || missing_debs+=(redis-server)
command -v redis-cli >/dev/null 2>&1 && command -v redis-benchmark >/dev/null 2>&1 || missing_debs+=(redis-tools)
command -v kcat >/dev/null 2>&1 || missing_debs+=(kcat)
command -v nats-server >/dev/null 2>&1 || missing_debs+=(nats-server)
command -v beanstalkd >/dev/null 2>&1 || missing_debs+=(beanstalkd)
command -v python3 >/dev/null 2>&1 || missing_debs+=(python3)
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  missing_debs+=(python3-venv)
fi
if ((${#missing_debs[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    say "installing Debian packages: ${missing_debs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing_debs[@]}" >/dev/null
  else
    echo "missing packages: ${missing_debs[*]}" >&2
    echo "install them (Debian/Ubuntu: sudo apt-get install ${missing_debs[*]}) or run this script as root on Debian" >&2
    exit 1
  fi
fi
# The service the package starts (where there is an init system) is not used by the
# tests: they start their own servers on free ports.

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install the Rust toolchain (https://rustup.rs) and re-run" >&2
  exit 1
fi

redis_version=$(redis-server --version | sed -n 's/.*v=\([0-9.]*\).*/\1/p')
case "$redis_version" in
  7.0.*) ;;
  *) echo "warning: redis-server $redis_version found; the differential tests expect 7.0.x (Debian 12)" >&2 ;;
esac

# ---- Python test environment ----------------------------------------------
# Needed by the Python suites and by minilog/tests/crash.rs (its load comes from confluent-kafka).
venv=.venv-tests
if ((want_python || want_rust)); then
  if [[ ! -x $venv/bin/python ]]; then
    say "creating $venv"
    python3 -m venv "$venv"
  fi
  if ! "$venv/bin/python" -c 'import redis, pytest, confluent_kafka, kafka, greenstalk' >/dev/null 2>&1; then
    say "installing PyPI packages: redis pytest confluent-kafka kafka-python greenstalk"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check redis pytest confluent-kafka kafka-python greenstalk
  fi
fi

# ---- Rust ------------------------------------------------------------------
say "cargo fmt --check"
cargo fmt --all -- --check

say "building"
cargo build --workspace --all-targets

if ((want_rust)); then
  say "cargo test (workspace)"
  cargo test --workspace
  say "cargo test (minicache's single-flight under shuttle's randomized scheduler)"
  cargo test -p minicache --features shuttle --test shuttle
  say "cargo test (miniraft's deliberately broken variants, each caught: core, simulator, real processes)"
  cargo test -p miniraft --features broken --lib raft
  cargo test -p miniraft --features broken --test broken
  cargo test -p miniraft --features broken --test processes the_checker
  say "cargo clippy"
  cargo clippy --workspace --all-targets -- -D warnings
  cargo clippy -p miniraft -p mini-cli --features miniraft/broken,mini-cli/broken --all-targets -- -D warnings
fi

if ((want_python)); then
  say "python tests (redis-py, redis-cli, redis-benchmark, differential vs redis-server $redis_version)"
  MINIKV_BIN="$PWD/target/debug/minikv" "$venv/bin/python" -m pytest minikv/tests/py -q
  say "python tests (minilog with kcat, confluent-kafka, kafka-python)"
  MINILOG_BIN="$PWD/target/debug/minilog" "$venv/bin/python" -m pytest minilog/tests/py -q
  say "python tests (miniqueue with greenstalk, differential vs beanstalkd $(beanstalkd -v 2>&1 | sed 's/^beanstalkd //'))"
  MINIQUEUE_BIN="$PWD/target/debug/miniqueue" "$venv/bin/python" -m pytest miniqueue/tests/py -q
fi

say "all tests passed"
