#!/usr/bin/env bash
# Issue 3's proxy benchmark: ringmaster with hash balancing against ringmaster
# with round robin, same backends, one run (keep-alive, 100-byte body). All of
# wrk's connections come from 127.0.0.1, so every request has the same key and
# bounded load spreads it: the per-request cost of key, hash, ring walk and load
# check is all there. Target: rps within 5% of round robin.
# usage: bench/hash.sh [harness options]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/harness.sh"
cd "$HARNESS"
./install.sh >/dev/null
./run.sh b ours ours-hash --targets targets-ours.toml --nice -20 "$@"
