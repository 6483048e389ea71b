#!/usr/bin/env bash
# Issue 13's heat-overhead benchmark: the cost of heat tracking on the request
# path, ringmaster against itself in one run per protocol, each pinned to one core:
#   b-keys  a sharded HTTP service keyed on a random one of 100,000 keys per request:
#           key ranking off (ours-shard-noheat), on at its defaults (ours-shard,
#           one request in 8 sampled), on for every request (ours-shard-all)
#   f       the memcache ambassador, 90% get / 10% set over 10,000 keys: the same three
# Shard and endpoint rates are always measured: the 1 s heat tick reads counters the
# request path keeps anyway, so "off" removes only the key sampling (and leaves the
# memcache byte counter, one relaxed add per command). Target: on within 3% of off.
# usage: bench/heat.sh [--pairs N] [--duration S]   (extra options go to the harness)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/harness.sh"
cd "$HARNESS"
./install.sh >/dev/null
./run.sh b-keys ours-shard-noheat ours-shard ours-shard-all --targets targets-ours.toml --nice -20 "$@"
./run.sh f ours-mc-noheat ours-mc ours-mc-all --targets targets-ours.toml --nice -20 "$@"
# The same cost in process, below the noise of the runs above: ns per sampled request.
(cd "$here/.." && cargo run --release --quiet --example heat_cost)
