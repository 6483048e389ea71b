#!/usr/bin/env bash
# Issue 6's benchmark: TLS termination, ringmaster against nginx and HAProxy
# with the same ECDSA P-256 certificate, each pinned to one core, in one run
# per scenario:
#   e-h1     HTTPS keep-alive, HTTP/1.1 (wrk)
#   e-h2     HTTPS, HTTP/2 over ALPN, 16 connections x 4 streams (h2load)
#   e-close  one request per TLS connection; wrk resumes sessions (PSK handshakes)
#   e-full   one request per TLS connection, resumption off (full handshakes)
# usage: bench/tls.sh [--pairs N] [--duration S]   (extra options go to the harness)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/harness.sh"
cd "$HARNESS"
./install.sh >/dev/null
for s in e-h1 e-h2 e-close e-full; do
  ./run.sh "$s" nginx haproxy ours --targets targets-ours.toml --nice -20 "$@"
done
