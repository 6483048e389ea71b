#!/usr/bin/env bash
# (e) full TLS 1.3 handshakes: one GET /small per connection with session
# resumption off (wrk, used by e-close, resumes sessions). The load generator is
# ringmaster's examples/tls_full_handshakes (rustls, aws-lc-rs), built by harness.sh.
# usage: e_tls_full.sh HOST:PORT DURATION_S
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
root=$(cd "$here/../.." && pwd)
exec timeout -k 5 $(($2 + 15)) ${LOADGEN_PIN:-} "$root/target/release/examples/tls_full_handshakes" "$1" "$2" "$here/certs/server.crt"
