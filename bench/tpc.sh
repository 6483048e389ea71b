#!/usr/bin/env bash
# Issue 23: thread per core against tokio's work-stealing runtime, on scenario b
# with the proxy on CPUs 0 and 1. Thread per core is two ringmaster processes
# with `workers = 1` sharing the port through `[server] reuse_port = true` (each
# with its own pools, no stealing); against one process with `workers = 2`.
# usage: bench/tpc.sh [harness options]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/harness.sh"
cd "$HARNESS"
./install.sh >/dev/null
# peers/ours.toml on ports of their own.
sed -e 's/27080/27380/; s/27901/27931/; s/27440/27741/' peers/ours.toml >peers/tpc-ws.toml
printf '\n[server]\nworkers = 2\n' >>peers/tpc-ws.toml
for i in 1 2; do
  sed -e "s/27080/27480/; s/27901/2794$i/; s/27440/27841/" peers/ours.toml >"peers/tpc-$i.toml"
  printf '\n[server]\nworkers = 1\nreuse_port = true\n' >>"peers/tpc-$i.toml"
done
cat >targets-tpc.toml <<'TOML'
include = "targets-ours.toml"

[targets]
ours-ws = { start = "{ringmaster} run --config {run}/peers/tpc-ws.toml", http = "127.0.0.1:27380", https = "127.0.0.1:27741" }
ours-tpc = { start = "{ringmaster} run --config {run}/peers/tpc-1.toml & {ringmaster} run --config {run}/peers/tpc-2.toml & wait", http = "127.0.0.1:27480", https = "127.0.0.1:27841" }
TOML
./run.sh b ours-ws ours-tpc --targets targets-tpc.toml --nice -20 --proxy-cpus 0,1 "$@"
