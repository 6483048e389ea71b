#!/usr/bin/env bash
# Issue 23: the same ringmaster binary on glibc's malloc, jemalloc and mimalloc
# (Debian's libjemalloc2 and libmimalloc2.0 under LD_PRELOAD, so nothing is
# rebuilt), beside nginx, each pinned to one core, in one run of scenario b.
# usage: bench/alloc.sh [harness options]   e.g. --pairs 4 --duration 6
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/harness.sh"
cd "$HARNESS"
./install.sh >/dev/null
dpkg -s libjemalloc2 libmimalloc2.0 >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libjemalloc2 libmimalloc2.0 >/dev/null
lib=/usr/lib/x86_64-linux-gnu
sed -e 's/27080/27380/; s/27901/27931/; s/27440/27740/' peers/ours.toml >peers/ours-je.toml
sed -e 's/27080/27480/; s/27901/27941/; s/27440/27840/' peers/ours.toml >peers/ours-mi.toml
cat >targets-alloc.toml <<TOML
include = "targets-ours.toml"

[targets]
ours-je = { start = "env LD_PRELOAD=$lib/libjemalloc.so.2 {ringmaster} run --config {run}/peers/ours-je.toml", http = "127.0.0.1:27380", https = "127.0.0.1:27740" }
ours-mi = { start = "env LD_PRELOAD=$lib/libmimalloc.so.2 {ringmaster} run --config {run}/peers/ours-mi.toml", http = "127.0.0.1:27480", https = "127.0.0.1:27840" }
TOML
./run.sh b nginx ours ours-je ours-mi --targets targets-alloc.toml --nice -20 "$@"
