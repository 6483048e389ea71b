#!/usr/bin/env bash
# Issue 23: ringmaster's own HTTP/1 code against hyper's (`[server] http1 =
# "hyper"`, kept for one release) and against nginx and HAProxy, each proxy
# pinned to one core, in one run per scenario (b, b4k, c).
# usage: bench/http1.sh [harness options]   e.g. --pairs 3 --duration 8
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/harness.sh"
cd "$HARNESS"
./install.sh >/dev/null
# The same config as `ours`, on ports of its own, with hyper's HTTP/1.
sed -e 's/27080/27280/; s/27901/27921/; s/27440/27640/' peers/ours.toml >peers/ours-hyper.toml
printf '\n[server]\nhttp1 = "hyper"\n' >>peers/ours-hyper.toml
cat >targets-http1.toml <<TOML
include = "targets-ours.toml"

[targets]
ours-hyper = { start = "{ringmaster} run --config {run}/peers/ours-hyper.toml", http = "127.0.0.1:27280", https = "127.0.0.1:27640" }
TOML
for s in ${SCENARIOS:-b b4k c}; do
  ./run.sh "$s" nginx haproxy ours-hyper ours --targets targets-http1.toml --nice -20 "$@"
done
