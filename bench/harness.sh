#!/usr/bin/env bash
# Prepares a private copy of the shared benchmark harness (../../shared/bench) with
# ringmaster's targets and peer configs added, builds ringmaster in release mode,
# and prints the harness directory. Sourced by the bench scripts.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
shared=$(cd "$root/../shared/bench" && pwd)
work="$here/.harness"
mkdir -p "$work"
# Copy the harness, keeping its generated parts (certs, tools build) between runs.
(cd "$shared" && tar --exclude=./run --exclude=./results --exclude=./tools/mcload/target -cf - .) | (cd "$work" && tar -xf -)
cp "$here"/peers/* "$work/peers/"
cp "$here/targets-ours.toml" "$work/"
# Scenarios of ours next to the harness's: e-full (full TLS handshakes, no
# resumption), f-multi (10-key memcache gets) and b-keys (keep-alive requests
# naming random keys, for sharded services).
cp "$here"/scenarios/* "$work/scenarios/"
python3 - "$work/bench.py" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
lines = {
    '"e-full"': ('    "e-close":', '    "e-full":  ("e_tls_full.sh",    "https", "http", "(e) full TLS 1.3 handshakes, no resumption, one request each"),\n'),
    '"b-keys"': ('    "b4k":', '    "b-keys":  ("b_keys.sh",        "http",  "http", "(b) proxied keep-alive HTTP/1.1, 100 B body, a random key of 100,000 per request"),\n'),
    '"f-multi"': ('    "f":', '    "f-multi": ("f_multiget.sh",    "mc",    "mc",   "(f) 10-key gets across the shards through a sharding proxy"),\n'),
}
for name, (before, line) in lines.items():
    if name not in s:
        i = s.index(before)
        s = s[:i] + line + s[i:]
open(p, "w").write(s)
PY
(cd "$root" && cargo build --release --quiet && cargo build --release --quiet --example tls_full_handshakes --example mcload_multi)
export RINGMASTER="$root/target/release/ringmaster"
export HARNESS="$work"
