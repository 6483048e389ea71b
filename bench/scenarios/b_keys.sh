#!/usr/bin/env bash
# (b, keyed) proxied keep-alive HTTP/1.1, 100-byte body, each request naming a
# random one of KEYS (100,000) users in the query (`/small?u=N`): a sharded
# service keys on it, so the heat ranking sees a spread of keys as it would in
# production.  usage: b_keys.sh HOST:PORT DURATION_S
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
lib=$(cd "$here/../lib" && pwd)
script=$(mktemp --suffix=.lua)
trap 'rm -f "$script"' EXIT
cat "$lib/report.lua" - >"$script" <<LUA
local keys = ${KEYS:-100000}
request = function()
  return wrk.format(nil, "${PATH_SMALL:-/small}?u=" .. math.random(1, keys))
end
LUA
url="http://$1${PATH_SMALL:-/small}"
dur=$2
timeout -k 5 $((dur + 15)) ${LOADGEN_PIN:-} wrk -t"${THREADS:-1}" -c"${CONNS:-64}" -d"${dur}s" --timeout 5s -s "$script" "$url"
