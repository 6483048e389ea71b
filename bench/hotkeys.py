#!/usr/bin/env python3
"""Issue 13's hot-key load test: Zipf-distributed gets through the memcache
ambassador over many shards, hot-key mitigation off, the root cache, and
key-split (each hot key on N shards), and the skew
the shards saw (hottest shard's requests over the mean, from the ambassador's
own per-shard counters over a measured window, and as /admin/heat reports it).

The shards are backed by a few real memcached processes (shard i on memcached
i mod N, each shard on a loopback address of its own): the load each shard
takes is counted at the root, which is what the skew is about. Keys are all set first (a miss is cached as well, but a hit is
the case that matters), then only read: writes cannot be absorbed by a root
cache, so a write-heavy mix keeps the skew of its writes.

usage: bench/hotkeys.py RINGMASTER MCLOAD [--shards 100] [--keys 1000000]
       [--zipf 1.0] [--measure 10] [--memcached 4] [--hot-share 0.0001] [--split 4 8]
       (bench/hotkeys.sh runs it)
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HEAT = 'window = "5s"\ntop_keys = 4096\nsample = 8\nhot_share = {hot_share}\n'


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, secs=20, host="127.0.0.1"):
    end = time.time() + secs
    while time.time() < end:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def mc_stats(port, which="", host="127.0.0.1"):
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(f"stats {which}".strip().encode() + b"\r\n")
        buf = b""
        while not buf.endswith(b"END\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    out = {}
    for line in buf.decode().splitlines():
        parts = line.split(" ")
        if len(parts) == 3 and parts[0] == "STAT":
            out[parts[1]] = parts[2]
    return out


def config(listen, admin, shards, memcached, mitigate, hot_share):
    c = f'[admin]\nlisten = "127.0.0.1:{admin}"\n\n[server]\nworkers = 1\n\n'
    c += f'[[listeners]]\nname = "mc"\nlisten = "127.0.0.1:{listen}"\nprotocol = "memcache"\nservice = "cache"\n\n'
    c += '[services.cache]\nkind = "sharded"\nprotocol = "memcache"\nsharder = { function = "maglev" }\n'
    c += 'timeouts = { connect = "1s", request = "2s" }\n\n'
    c += f"[services.cache.heat]\n{HEAT.format(hot_share=hot_share)}\n"
    if mitigate == "root cache":
        c += '[services.cache.hot_keys]\ncache = true\nttl = "1s"\n\n'
    elif mitigate.startswith("split"):
        c += f'[services.cache.hot_keys]\nsplit = {mitigate.split()[1]}\nttl = "1s"\n\n'
    for i in range(shards):
        c += f'[services.cache.shards.s{i:03}]\nendpoints = [{{ address = "{shard_addr(i, memcached)}" }}]\n'
    return c


def shard_addr(i, memcached):
    """Shard i's endpoint: memcached i mod N, on a loopback address of the shard's own
    (an endpoint is listed once per service, so each shard needs its own address)."""
    return f"127.0.{i // 250}.{i % 250 + 2}:{memcached[i % len(memcached)]}"


def run(args, mitigate, memcached, tmp):
    listen, admin = free_port(), free_port()
    path = os.path.join(tmp, f"hot-{mitigate.replace(' ', '-')}.toml")
    with open(path, "w") as f:
        f.write(config(listen, admin, args.shards, memcached, mitigate, args.hot_share))
    proxy = subprocess.Popen([args.ringmaster, "run", "--config", path], stderr=subprocess.DEVNULL)
    try:
        wait_port(listen)
        env = dict(os.environ, CONNS="32", MC_KEYS=str(args.keys), MC_MULTI="1", MC_ZIPF=str(args.zipf), MC_VALUE="100")
        duration = args.settle + args.measure + 3
        out = {}

        def load():
            r = subprocess.run([args.mcload, f"127.0.0.1:{listen}", str(duration)], env=env, capture_output=True, text=True, timeout=duration + 600)
            line = next((l for l in r.stdout.splitlines() if l.startswith("RESULT ")), None)
            out["result"] = json.loads(line[7:]) if line else {"error": r.stderr[-500:]}

        t = threading.Thread(target=load)
        t.start()
        # The timed run starts once the keys are set: gets begin.
        while int(mc_stats(listen).get("cmd_get", 0)) < 1000:
            time.sleep(0.2)
        time.sleep(args.settle)
        # The memcached servers' own count of the keys they were asked for.
        def served():
            return [sum(int(mc_stats(p, host=shard_addr(j, memcached).rsplit(":", 1)[0]).get(k, 0)) for k in ("get_hits", "get_misses"))
                    for j, p in enumerate(memcached)]

        a, ga, sa = mc_stats(listen, "shards"), mc_stats(listen), served()
        time.sleep(args.measure)
        b, gb, sb = mc_stats(listen, "shards"), mc_stats(listen), served()
        heat = json.load(urllib.request.urlopen(f"http://127.0.0.1:{admin}/admin/heat", timeout=5))
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
        t.join()
    finally:
        proxy.terminate()
        proxy.wait()
    names = [k[: -len(":requests")] for k in b if k.endswith(":requests")]
    deltas = [int(b[f"{n}:requests"]) - int(a[f"{n}:requests"]) for n in names]
    mean = sum(deltas) / len(deltas)
    by_server = [y - x for x, y in zip(sa, sb)]
    server_mean = sum(by_server) / len(by_server)
    gets = int(gb["cmd_get"]) - int(ga["cmd_get"])
    root = int(gb.get("hot_cache_hits", 0)) - int(ga.get("hot_cache_hits", 0))
    svc = heat["services"][0]
    return {
        "mitigation": mitigate,
        "rps": out["result"].get("rps"),
        "errors": out["result"].get("err_read", out["result"].get("error")),
        "skew": max(deltas) / mean if mean else 0.0,
        "server_skew": max(by_server) / server_mean if server_mean else 0.0,
        "heat_skew": svc["skew"],
        "hot_keys": next(int(float(l.split()[-1])) for l in metrics.splitlines() if l.startswith('ringmaster_heat_hot_keys{service="cache"}')),
        "absorbed": root / gets if gets else 0.0,
        "gets": gets,
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("ringmaster")
    p.add_argument("mcload")
    p.add_argument("--shards", type=int, default=100)
    p.add_argument("--keys", type=int, default=1_000_000)
    p.add_argument("--zipf", type=float, default=1.0)
    p.add_argument("--settle", type=float, default=6.0, help="seconds of load before the window (heat finds the hot keys)")
    p.add_argument("--measure", type=float, default=10.0)
    p.add_argument("--memcached", type=int, default=4)
    p.add_argument("--hot-share", type=float, default=0.0001, help="heat.hot_share: keys above it are hot")
    p.add_argument("--split", type=int, nargs="*", default=[4], help="key-split runs, one per number of places")
    args = p.parse_args()
    ports = [free_port() for _ in range(args.memcached)]
    user = ["-u", "root"] if os.geteuid() == 0 else []
    listens = [",".join(shard_addr(i, ports) for i in range(j, args.shards, len(ports))) for j in range(len(ports))]
    servers = [subprocess.Popen(["memcached", *user, "-l", l, "-U", "0", "-t", "1", "-m", "512"]) for l in listens]
    try:
        for j, port in enumerate(ports):
            wait_port(port, host=shard_addr(j, ports).rsplit(":", 1)[0])
        with tempfile.TemporaryDirectory() as tmp:
            rows = [run(args, m, ports, tmp) for m in ["off", "root cache", *(f"split {n}" for n in args.split)]]
    finally:
        for s in servers:
            s.terminate()
            s.wait()
    print(f"Zipf s={args.zipf} gets over {args.keys:,} keys, {args.shards} shards, heat: {HEAT.format(hot_share=args.hot_share).strip().replace(chr(10), ', ')}")
    print(f"hottest/mean memcached counts each server's get_hits + get_misses ({args.memcached} servers; one per shard with --memcached {args.shards})")
    print("| mitigation | gets/s | errors | hottest/mean shard (counters) | hottest/mean memcached (its own stats) | /admin/heat skew | hot keys | reads answered at the root |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mitigation']} | {r['rps']:,.0f} | {r['errors']} | {r['skew']:.3f} | {r['server_skew']:.3f} | {r['heat_skew']:.3f} | {r['hot_keys']} | {r['absorbed']:.1%} |")


if __name__ == "__main__":
    main()
