#!/usr/bin/env bash
# Two builds of ringmaster side by side in one run: the current build (`ours`,
# `ours-cache`) against an earlier one (`prev`, `prev-cache`, the same configs on
# other ports), for "no regression beyond noise" claims after a change that should
# not move performance. Scenarios b, b4k, c (bench/lb.sh's) and d (bench/cache.sh's),
# or those named in SCENARIOS (f and f-multi: the ambassador, `ours-mc` against `prev-mc`).
# usage: [SCENARIOS="b d f"] bench/ab.sh OLD_BINARY [harness options]
#   e.g. git worktree add /tmp/prev HEAD~3 && (cd /tmp/prev && cargo build --release)
#        bench/ab.sh /tmp/prev/target/release/ringmaster --pairs 7
set -euo pipefail
prev=$(realpath "${1:?usage: bench/ab.sh OLD_BINARY [harness options]}")
shift
here=$(cd "$(dirname "$0")" && pwd)
source "$here/harness.sh"
cd "$HARNESS"
./install.sh >/dev/null
# The earlier build's configs: ours.toml and ours-cache.toml on ports of their own.
sed -e 's/27080/27180/; s/27901/27911/; s/27440/27540/' peers/ours.toml >peers/prev.toml
sed -e 's/27096/27196/; s/27903/27913/' peers/ours-cache.toml >peers/prev-cache.toml
sed -e 's/27220/27320/' peers/ours-mc.toml >peers/prev-mc.toml
cat >targets-ab.toml <<TOML
include = "targets-ours.toml"

[targets]
prev = { start = "$prev run --config {run}/peers/prev.toml", http = "127.0.0.1:27180", https = "127.0.0.1:27540" }
prev-cache = { start = "$prev run --config {run}/peers/prev-cache.toml", http = "127.0.0.1:27196" }
prev-mc = { start = "$prev run --config {run}/peers/prev-mc.toml", mc = "127.0.0.1:27320" }
TOML
for s in ${SCENARIOS:-b b4k c d}; do
  case $s in
    d) ./run.sh d prev-cache ours-cache --targets targets-ab.toml --nice -20 "$@" ;;
    f | f-multi) ./run.sh "$s" prev-mc ours-mc --targets targets-ab.toml --nice -20 "$@" ;;
    *) ./run.sh "$s" prev ours --targets targets-ab.toml --nice -20 "$@" ;;
  esac
done
