#!/usr/bin/env bash
# Issue 11, part 4: a dead Redis costs no throughput. A route limited through the
# Redis store (fail open, a limit no client reaches, 100 ms store timeout), 16
# keep-alive connections of GETs (wrk), Redis running, then stopped (SIGSTOP: its
# connections stay open, so every command would wait out the timeout), side by side
# for the current build and an earlier one (OLD_BINARY, before the circuit breaker).
# usage: bench/redis_down.sh OLD_BINARY [SECONDS]
set -euo pipefail
old=$(realpath "${1:?usage: bench/redis_down.sh OLD_BINARY [SECONDS]}")
secs=${2:-5}
here=$(cd "$(dirname "$0")" && pwd)
(cd "$here/.." && cargo build --release --quiet)
new="$here/../target/release/ringmaster"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null; kill "$p" 2>/dev/null; done; rm -rf "$dir"; }
trap cleanup EXIT
rport=$(free_port)
taskset -c 1 redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
redis=$!; pids+=("$redis")
bport=$(free_port)
taskset -c 1 "$new" backend --listen "127.0.0.1:$bport" --name a >/dev/null &
pids+=("$!")
sleep 0.5
start_proxy() { # binary name: writes the port to $dir/name.port
  local port admin; port=$(free_port); admin=$(free_port)
  cat >"$dir/$2.toml" <<TOML
[server]
workers = 1
[admin]
listen = "127.0.0.1:$admin"
[[listeners]]
name = "main"
listen = "127.0.0.1:$port"
[rate_limit_store]
redis = "redis://127.0.0.1:$rport"
timeout = "100ms"
on_failure = "open"
[rate_limits.huge]
rate = 100000000
period = "1s"
[[routes]]
service = "app"
rate_limit = ["huge"]
[services.app]
kind = "replicated"
endpoints = [{ address = "127.0.0.1:$bport" }]
TOML
  taskset -c 0 "$1" run --config "$dir/$2.toml" >/dev/null 2>"$dir/$2.log" &
  pids+=("$!")
  sleep 0.7
  echo "$port" >"$dir/$2.port"
}
rps() { taskset -c 1 wrk -t1 -c16 -d"${secs}s" "http://127.0.0.1:$1/" | awk '/Requests\/sec/ { printf "%d", $2 }'; }
printf '%-8s %14s %14s %8s\n' build "redis up" "redis stopped" ratio
for b in old new; do
  bin=$old; [ "$b" = new ] && bin=$new
  start_proxy "$bin" "$b"
  port=$(cat "$dir/$b.port")
  curl -s -o /dev/null "http://127.0.0.1:$port/"
  up=$(rps "$port")
  kill -STOP "$redis"
  down=$(rps "$port")
  kill -CONT "$redis"
  sleep 1
  printf '%-8s %14s %14s %8s\n' "$b" "$up" "$down" "$(python3 -c "print(f'{$down/$up:.3f}')")"
done
