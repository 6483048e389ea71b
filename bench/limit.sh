#!/usr/bin/env bash
# Issue 5's benchmarks: the cost of one local decision with a million keys
# tracked (target <= 100 ns) and memory per key; then proxy throughput with an
# anonymous limit on every request against no limit (target: within 10%).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
(cd "$here/.." && taskset -c 0 cargo run --release --quiet --example limit_bench 1000000)
# The shared store: a private redis-server on CPU 1, the client on CPU 0.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
taskset -c 1 redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
redis_pid=$!
trap 'kill $redis_pid 2>/dev/null' EXIT
sleep 0.5
(cd "$here/.." && taskset -c 0 cargo run --release --quiet --example redis_limit_bench "redis://127.0.0.1:$port" 5)
source "$here/harness.sh"
cd "$HARNESS"
./install.sh >/dev/null
./run.sh b ours ours-limit --targets targets-ours.toml --nice -20 "$@"
