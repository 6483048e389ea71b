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
(cd "$root" && cargo build --release --quiet)
export RINGMASTER="$root/target/release/ringmaster"
export HARNESS="$work"
