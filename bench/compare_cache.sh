#!/usr/bin/env bash
# Issue 24: `ringmaster bench --compare-cache` beside wrk on the demo's cached
# route. The demo runs pinned to CPU 0; the load generators run pinned to CPU 1,
# one after the other in each round: wrk and ringmaster bench with the route's
# cache on, then both with it off (POST /admin/cache/switch). Prints each
# round's requests/s and p99 from both tools, their ratio (bench / wrk), and
# last the comparison table `ringmaster bench --compare-cache` prints itself.
# The demo's hot-shard scene runs in the background in every round alike.
# usage: bench/compare_cache.sh [ROUNDS] [SECONDS] [CONNECTIONS]
set -euo pipefail
rounds=${1:-3}
secs=${2:-5}
conns=${3:-16}
here=$(cd "$(dirname "$0")" && pwd)
(cd "$here/.." && cargo build --release --quiet)
bin="$here/../target/release/ringmaster"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
listen=127.0.0.1:$(free_port); admin=127.0.0.1:$(free_port)
tls=127.0.0.1:$(free_port); mc=127.0.0.1:$(free_port)
taskset -c 0 "$bin" demo --listen "$listen" --admin "$admin" --tls-listen "$tls" --memcache-listen "$mc" >/dev/null 2>&1 &
demo=$!
trap 'kill $demo 2>/dev/null' EXIT
for _ in $(seq 50); do curl -sf "http://$admin/readyz" >/dev/null && break; sleep 0.1; done
url="http://$listen/cc/page?cc=max-age=3600"
curl -s -o /dev/null "$url"
switch() { curl -sf -X POST "http://$admin/admin/cache/switch?route=cached&on=$1" >/dev/null; }
wrk_run() { # prints: rps p99_ms
  taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" --latency "$url" |
    awk '/Requests\/sec/ { rps = $2 } / 99%/ { v = $2; if (v ~ /us$/) { sub(/us/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms/, "", v) } else if (v ~ /s$/) { sub(/s/, "", v); v *= 1000 } p99 = v } END { printf "%.0f %.2f", rps, p99 }'
}
bench_run() {
  taskset -c 1 "$bin" bench "$url" -c "$conns" -d "${secs}s" --json |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print("%.0f %.2f" % (r["rps"], r["latency_us"]["p99"]/1000))'
}
printf '%-6s %-6s %10s %10s %8s %10s %10s\n' round cache wrk_rps bench_rps ratio wrk_p99 bench_p99
for r in $(seq "$rounds"); do
  for on in true false; do
    switch "$on"
    read -r wr wp <<<"$(wrk_run)"
    read -r br bp <<<"$(bench_run)"
    printf '%-6s %-6s %10s %10s %8.3f %9sms %9sms\n' "$r" "$on" "$wr" "$br" "$(echo "$br / $wr" | bc -l)" "$wp" "$bp"
  done
done
switch true
echo
echo "ringmaster bench --compare-cache cached -c $conns -d ${secs}s --admin $admin (pinned to CPU 1):"
taskset -c 1 "$bin" bench "$url" -c "$conns" -d "${secs}s" --admin "$admin" --compare-cache cached
