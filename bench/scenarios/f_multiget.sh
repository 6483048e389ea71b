#!/usr/bin/env bash
# (f, multi-get) 10-key gets (MC_MULTI) over uniform keys, one in flight per
# connection: a sharding proxy splits each over its shards and reassembles the
# answer in key order. The load generator is ringmaster's examples/mcload_multi
# (the harness's mcload sends one key per get), built by harness.sh.
# usage: f_multiget.sh HOST:PORT DURATION_S   (env CONNS, MC_KEYS, MC_VALUE, MC_MULTI)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
root=$(cd "$here/../.." && pwd)
exec timeout -k 5 $(($2 + 45)) ${LOADGEN_PIN:-} "$root/target/release/examples/mcload_multi" "$1" "$2"
