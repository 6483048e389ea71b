#!/usr/bin/env bash
# Issue 12's benchmark: the memcache ambassador against direct memcached and
# nutcracker (twemproxy), each pinned to one core, in one run per variant:
#   f            64 connections, one request in flight each, 90% get / 10% set, 100-byte values
#   f pipelined  the same with 8 requests in flight per connection (MC_PIPELINE=8)
#   f-multi      10-key gets over the three shards (examples/mcload_multi)
# then ringmaster with workers = 2 against itself with one worker, both free to
# use both cores, pipelined so that the load side leaves the proxy some room
# (the load generator still shares the cores: see RESULTS.md),
# then RSS per idle client connection (memcache_idle_rss.py, against nutcracker),
# then RSS while 1,000 clients ask 8 MB each and never read (memcache_pinned_rss.py).
# usage: bench/memcache.sh [--pairs N] [--duration S]   (extra options go to the harness)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/harness.sh"
cd "$HARNESS"
./install.sh >/dev/null
./run.sh f direct-mc nutcracker ours-mc --targets targets-ours.toml --nice -20 "$@"
MC_PIPELINE=8 ./run.sh f direct-mc nutcracker ours-mc --targets targets-ours.toml --nice -20 "$@"
./run.sh f-multi direct-mc nutcracker ours-mc --targets targets-ours.toml --nice -20 "$@"
MC_PIPELINE=8 ./run.sh f ours-mc ours-mc2 --targets targets-ours.toml --nice -20 --proxy-cpus 0,1 "$@"
python3 "$here/memcache_idle_rss.py" "$RINGMASTER" --conns 5000
python3 "$here/memcache_pinned_rss.py" "$RINGMASTER" --clients 1000 --seconds 10
