#!/usr/bin/env bash
# Issue 2's benchmark: ringmaster against nginx and HAProxy as round-robin load
# balancers, each pinned to one core, in one run per scenario:
#   b   keep-alive, 100-byte body      b4k  keep-alive, 4 KiB body
#   c   a new client connection per request (Connection: close)
# then RSS with 10,000 idle client connections (idle_rss.py).
# usage: bench/lb.sh [--pairs N] [--duration S]   (extra options go to the harness)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/harness.sh"
cd "$HARNESS"
./install.sh >/dev/null
for s in b b4k c; do
  ./run.sh "$s" nginx haproxy ours --targets targets-ours.toml --nice -20 "$@"
done
python3 "$here/idle_rss.py" --targets "$HARNESS/targets-ours.toml" --conns 10000 nginx ours
python3 "$here/idle_rss.py" --targets "$HARNESS/targets-ours.toml" --conns 9000 nginx haproxy ours
