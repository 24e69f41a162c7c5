#!/usr/bin/env bash
# minikv vs redis-server 7.0, side by side (see benches/src/kv.rs for what it measures).
#
# Builds the release binaries, then runs `mini bench kv` with the arguments given:
#   benches/kv-vs-redis.sh                      the full run, about 25 minutes
#   benches/kv-vs-redis.sh --quick              a smoke test, well under a minute
#   benches/kv-vs-redis.sh --out /tmp/kv.md     also write the markdown tables
#   benches/kv-vs-redis.sh --json               JSON on stdout
# Needs redis-server, redis-benchmark and redis-cli 7.0 on PATH
# (Debian/Ubuntu: apt-get install redis-server redis-tools).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p minikv -p mini-cli
exec target/release/mini bench kv "$@"
