#!/usr/bin/env python3
"""RSS per idle memcache client connection: ringmaster's ambassador and nutcracker.

    memcache_idle_rss.py RINGMASTER_BINARY [--conns 5000]

Starts three memcached (ports 27211-27213), then each proxy in turn with the
bench peer configs (bench/peers/ours-mc.toml, shared/bench/peers/nutcracker.yml),
opens N client connections that each complete one get, and reports the RSS
growth per connection while they sit idle.
"""
import argparse, os, resource, socket, subprocess, sys, time

here = os.path.dirname(os.path.abspath(__file__))


def rss_kib(pid):
    """Resident KiB of `pid`; 0 once it has exited."""
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def wait(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing on {port}")


def hold(port, n):
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"get idle-check\r\n")
        socks.append(s)
    for s in socks:
        got = b""
        while not got.endswith(b"END\r\n"):
            got += s.recv(4096)
    return socks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ringmaster")
    ap.add_argument("--conns", type=int, default=5000)
    a = ap.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    mcs = [subprocess.Popen(["memcached", "-u", "root", "-l", "127.0.0.1", "-p", str(p), "-U", "0", "-t", "1", "-m", "64", "-c", "20000"]) for p in (27211, 27212, 27213)]
    targets = [
        ("ringmaster", [a.ringmaster, "run", "--config", os.path.join(here, "peers", "ours-mc.toml")], 27220),
        ("nutcracker", ["nutcracker", "-c", os.path.join(here, "..", "..", "shared", "bench", "peers", "nutcracker.yml"), "-s", "27222"], 27221),
    ]
    rows = []
    try:
        for p in (27211, 27212, 27213):
            wait(p)
        for name, cmd, port in targets:
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait(port)
                hold(port, 1)
                time.sleep(0.5)
                rest = rss_kib(p.pid)
                socks = hold(port, a.conns)
                time.sleep(1)
                held = rss_kib(p.pid)
                rows.append((name, rest, held, (held - rest) * 1024 / a.conns))
                for s in socks:
                    s.close()
            finally:
                p.terminate()
                p.wait(timeout=15)
    finally:
        for m in mcs:
            m.terminate()
    print(f"RSS with {a.conns} idle memcache client connections (KiB)")
    for name, rest, held, per in rows:
        print(f"{name:<12} at rest {rest:>8}  holding {held:>8}  {per:>7.0f} bytes/conn")


if __name__ == "__main__":
    main()
