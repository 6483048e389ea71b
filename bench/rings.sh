#!/usr/bin/env bash
# Issue 3's sharding-function figures: for 10, 100 and 1000 shards with 10^4
# keys per shard (uniform, then Zipf 1.0): key-space share max/mean and CV,
# keys moved on add/remove against the ideal, lookup ns without and with key
# hashing. Targets for maglev: share max/mean <= 1.01, moved <= 1.6x ideal up
# to 100 shards, lookup <= 10 ns (<= 30 ns with hashing). Rendezvous is O(shards)
# per lookup, so at 1000 shards it gets 10^5 keys.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
(cd "$root" && cargo build --release --quiet)
rm=$root/target/release/ringmaster
for dist in uniform zipf; do
  for n in 10 100 1000; do
    extra=()
    [ "$dist" = zipf ] && extra=(--zipf 1.0)
    echo "## $n shards, $((n * 10000)) keys, $dist"
    first=1
    for f in maglev ketama ketama_twemproxy jump rendezvous; do
      keys=$((n * 10000))
      [ "$f" = rendezvous ] && [ "$n" -ge 1000 ] && keys=100000
      taskset -c 0 "$rm" ring analyze --function "$f" --shards "$n" --keys "$keys" "${extra[@]}" | tail -n +$((first ? 1 : 2))
      first=0
    done
  done
done
