#!/usr/bin/env bash
# Issue 4's benchmarks.
#  1. Cache hits on one core: ringmaster against Varnish, nginx proxy_cache and
#     HAProxy's cache, and nginx serving the same bytes as a static file
#     (scenario d: one URL, max-age=60, keep-alive). Ratios are against `direct`.
#  2. The same load with and without the cache (scenario b through ringmaster
#     with no cache, then with it): throughput, latency, upstream requests saved.
#  3. Memory per cached object (cache_memory.py).
# usage: bench/cache.sh [harness options]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/harness.sh"
cd "$HARNESS"
./install.sh >/dev/null
./run.sh d direct nginx-cache haproxy-cache varnish ours-cache --targets targets-ours.toml --nice -20 "$@"
./run.sh b ours ours-cache --targets targets-ours.toml --nice -20 "$@"
python3 "$here/cache_memory.py" "$RINGMASTER"
