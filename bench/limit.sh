#!/usr/bin/env bash
# Issue 5's benchmarks: the cost of one local decision with a million keys
# tracked (target <= 100 ns) and memory per key; then proxy throughput with an
# anonymous limit on every request against no limit (target: within 10%).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
(cd "$here/.." && taskset -c 0 cargo run --release --quiet --example limit_bench 1000000)
source "$here/harness.sh"
cd "$HARNESS"
./install.sh >/dev/null
./run.sh b ours ours-limit --targets targets-ours.toml --nice -20 "$@"
