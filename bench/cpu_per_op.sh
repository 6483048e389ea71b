#!/usr/bin/env bash
# CPU per operation of one memcache proxy, read from /proc (utime + stime of the
# proxy over the timed run, divided by the operations the load generator did):
# three memcached and the load generator on cpu1, the proxy alone on cpu0, as
# the harness pins them. A quick A/B between builds (RINGMASTER_BIN=PATH runs
# another build as ours); bench/memcache.sh is the
# record.   usage: bench/cpu_per_op.sh ours|nutcracker [f|f-multi] [SECONDS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
harness="$here/.harness"
who=${1:?ours or nutcracker}; scenario=${2:-f}; secs=${3:-8}
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null || true' EXIT
for p in 27211 27212 27213; do
  taskset -c 1 memcached -u root -l 127.0.0.1 -p $p -U 0 -t 1 -m 256 -c 8192 & pids+=($!)
done
for p in 27211 27212 27213; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.05; done
done
case $who in
  ours) taskset -c 0 "${RINGMASTER_BIN:-$root/target/release/ringmaster}" run --config "${MC_CONFIG:-$harness/peers/ours-mc.toml}" 2>/dev/null & addr=127.0.0.1:27220 ;;
  nutcracker) taskset -c 0 nutcracker -c "$harness/peers/nutcracker.yml" -a 127.0.0.1 -s 27222 -o /dev/null & addr=127.0.0.1:27221 ;;
  *) echo "ours or nutcracker" >&2; exit 2 ;;
esac
proxy=$!; pids+=($proxy)
for _ in $(seq 100); do (exec 3<>/dev/tcp/${addr%:*}/${addr#*:}) 2>/dev/null && break; sleep 0.05; done
ticks() { awk '{ print $14 " " $15 }' "/proc/$proxy/stat"; }
case $scenario in
  f) load=("$harness/tools/mcload/target/release/mcload" --addr "$addr" --duration "$secs" --conns "${CONNS:-64}" --pipeline "${MC_PIPELINE:-1}") ;;
  f-multi) load=("$root/target/release/examples/mcload_multi" "$addr" "$secs") ;;
esac
# The load generator prefills before its timed phase: sample the CPU across
# the timed phase only by starting the count after the prefill's burst.
out=$(mktemp); taskset -c 1 "${load[@]}" >"$out" & lg=$!
sleep 1; t0=$(ticks); s0=$(date +%s.%N)
# SYSCALLS=1: also count the proxy's system calls by kind over the window.
events=raw_syscalls:sys_enter,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_writev,syscalls:sys_enter_read,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_ctl
[ "${SYSCALLS:-0}" = 1 ] && perf stat -x, -e "$events" -p "$proxy" -o "$out.sys" -- sleep $((secs - 2)) &
# PROFILE=FILE: also record where the proxy spends its CPU (perf report -i FILE).
[ -n "${PROFILE:-}" ] && perf record -q -e cpu-clock -F 2000 -g -p "$proxy" -o "$PROFILE" -- sleep $((secs - 2)) 2>/dev/null &
wait $lg; t1=$(ticks); s1=$(date +%s.%N)
python3 - "$out" "$t0" "$t1" "$s0" "$s1" "$secs" <<'PY'
import json, os, sys
out, t0, t1, s0, s1 = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), float(sys.argv[4]), float(sys.argv[5])
r = json.loads(open(out).read().split("RESULT ", 1)[1])
hz = os.sysconf("SC_CLK_TCK")
# CPU over the sampled window, ops over the same window at the measured rate.
ops = r["rps"] * (s1 - s0)
user, sys_ = ((int(b) - int(a)) / hz for a, b in zip(t0, t1))
cpu = user + sys_
print(f"rps {r['rps']:.0f}  p99 {r['p99_us']} us  cpu {cpu / (s1 - s0) * 100:.0f}%  "
      f"cpu/op {cpu / ops * 1e6:.2f} us (user {user / ops * 1e6:.2f}, kernel {sys_ / ops * 1e6:.2f})")
if os.path.exists(out + ".sys"):
    window = float(sys.argv[6]) - 2
    for line in open(out + ".sys"):
        f = line.strip().split(",")
        if len(f) > 2 and f[0].isdigit():
            print(f"  {f[2].split(':')[-1]:>22} {int(f[0]) / (r['rps'] * window):.3f} per op")
PY
rm -f "$out" "$out.sys"
