#!/usr/bin/env bash
# Issue 13's hot-key benchmarks: the skew of 100 shards under Zipf (s = 1) reads,
# without mitigation, with the root cache of hot keys and with key-split, by
# simulation (ring analyze) and in a load test through the ambassador
# (bench/hotkeys.py, real memcached).
# usage: bench/hotkeys.sh [hotkeys.py options]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/harness.sh"
"$RINGMASTER" ring analyze --function maglev --shards 100 --keys 1000000 --zipf 1.0 \
  --hot-keys 10,100,1000 --top-keys 4096 --sample 8 --hot-share 0.0001 --split 16
python3 "$here/hotkeys.py" "$RINGMASTER" "$here/../target/release/examples/mcload_multi" "$@"
