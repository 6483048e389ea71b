#!/usr/bin/env python3
"""RSS of each proxy holding 10,000 idle keep-alive client connections.

    idle_rss.py --targets HARNESS/targets-ours.toml nginx haproxy ours

Uses the shared harness (imported from the targets file's directory) to render
the peers' configs and start each target pinned to CPU 0, one at a time. For
each: RSS of its process group at rest, then after N client connections that
each completed one request (so every proxy has parsed a request on it) and now
sit idle. HAProxy's peer config caps maxconn at 8000; for this measurement
only, it is raised to 9990, the most it can take under this machine's hard
limit of 20,000 file descriptors (HAProxy reserves two per connection), so
lb.sh measures HAProxy at 9,000 connections and the others at 10,000 too.
"""
import argparse
import os
import resource
import socket
import sys
import time


def group_rss_kib(pgid):
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.getpgid(int(pid)) != pgid:
                continue
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ProcessLookupError):
            pass
    return total


def open_idle(addr, n):
    host, port = addr.rsplit(":", 1)
    socks = []
    req = b"GET /small HTTP/1.1\r\nHost: bench\r\n\r\n"
    for _ in range(n):
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(req)
        socks.append(s)
    # Read each answer so every connection has completed one request and is idle.
    for s in socks:
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        head, _, body = got.partition(b"\r\n\r\n")
        want = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                want = int(line.split(b":")[1])
        while len(body) < want:
            chunk = s.recv(4096)
            if not chunk:
                break
            body += chunk
    return socks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", required=True)
    ap.add_argument("--conns", type=int, default=10_000)
    ap.add_argument("target", nargs="+")
    a = ap.parse_args()
    harness = os.path.dirname(os.path.abspath(a.targets))
    sys.path.insert(0, harness)
    import bench  # the shared harness

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    cfg = bench.load_targets(os.path.basename(a.targets))
    os.makedirs(bench.RUN, exist_ok=True)
    bench.render_peers(cfg)
    bench.ensure_certs()
    hcfg = os.path.join(bench.RUN, "peers", "haproxy.cfg")
    text = open(hcfg).read().replace("maxconn 8000", "maxconn 9990")
    open(hcfg, "w").write(text)
    rows = []
    try:
        backends = [bench.start(f"backend{i}", cmd, "1") for i, cmd in enumerate(cfg["backends"]["http"], 1)]
        for port in cfg["backends"]["http_ports"]:
            bench.wait_port(f"127.0.0.1:{port}")
        for name in a.target:
            t = cfg["targets"][name]
            p = bench.start(name, t["start"], "0")
            if not bench.wait_port(t["http"], proc=p):
                raise RuntimeError(f"{name} did not come up")
            time.sleep(1)
            bench.http_get(t["http"], "/small")
            rest = group_rss_kib(p.pid)
            socks = open_idle(t["http"], a.conns)
            time.sleep(2)
            held = group_rss_kib(p.pid)
            rows.append((name, rest, held, (held - rest) * 1024 / a.conns))
            for s in socks:
                s.close()
            os.killpg(p.pid, 15)
            p.wait(timeout=10)
            bench.started[:] = [x for x in bench.started if x[1] is not p]
    finally:
        bench.stop_all()
    print(f"\nRSS with {a.conns} idle keep-alive client connections (process group, KiB)")
    print(f"{'target':<10} {'at rest':>10} {'holding':>10} {'bytes/conn':>11} {'vs first':>9}")
    for name, rest, held, per in rows:
        print(f"{name:<10} {rest:>10} {held:>10} {per:>11.0f} {held / rows[0][2]:>8.2f}x")


if __name__ == "__main__":
    main()
