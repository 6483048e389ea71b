#!/usr/bin/env python3
"""Proxy memory while clients pipeline multi-gets of 1 MB values and never read:
ringmaster's ambassador (its default client limits) and nutcracker, side by side.

    memcache_pinned_rss.py RINGMASTER_BINARY [--clients 1000] [--seconds 10]

Starts three memcached (-I 2m, ports 27211-27213) and stores four 1 MB values
(b0..b3, over the shards) through each proxy; then N clients, each with a 4 KiB
receive buffer, send `get b0 b1 b2 b3` twice (8 MB of answers asked for with
35 bytes) and never read. Samples the proxy's RSS every 100 ms for the given
time, and every second asks `get b0` on a fresh connection that does read
(whether a reading client is still served). nutcracker runs under an address
space cap (prlimit --as, 12 GiB) so that it cannot take the machine down.

The stated bound for ringmaster: RSS at rest + max_total_pending_bytes (256 MiB
by default) + the answers in flight when the budget is crossed, because past
that budget every client whose own unread answers exceed max_pending_bytes
(1 MiB) is closed, and a client that reads keeps being served.
"""
import argparse, os, resource, socket, subprocess, sys, tempfile, time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from memcache_idle_rss import rss_kib, wait  # noqa: E402  (the same probes as the idle-RSS run)
shared = os.path.join(here, "..", "..", "shared", "bench", "peers")
VALUE = 1024 * 1024


def ask(port, req, want, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(req)
    got = b""
    while not got.endswith(want):
        d = s.recv(1 << 20)
        if not d:
            break
        got += d
    s.close()
    return got


def probe(port):
    """A fresh client's `get b0`: seconds to the whole answer, or None."""
    t = time.monotonic()
    try:
        got = ask(port, b"get b0\r\n", b"END\r\n", timeout=3)
        return time.monotonic() - t if got.startswith(b"VALUE b0") and got.endswith(b"END\r\n") else None
    except OSError:
        return None


def pinned(name, cmd, port, clients, seconds):
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    socks = []
    try:
        wait(port)
        for k in ("b0", "b1", "b2", "b3"):
            got = ask(port, f"set {k} 0 0 {VALUE}\r\n".encode() + b"v" * VALUE + b"\r\n", b"\r\n")
            assert got == b"STORED\r\n", got
        time.sleep(0.5)
        rest = rss_kib(p.pid)
        for _ in range(clients):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", port))
            s.sendall(b"get b0 b1 b2 b3\r\nget b0 b1 b2 b3\r\n")
            socks.append(s)
        peak, served, probes = rest, 0, 0
        end = time.monotonic() + seconds
        next_probe = time.monotonic() + 1
        while time.monotonic() < end:
            peak = max(peak, rss_kib(p.pid))
            if time.monotonic() >= next_probe:
                probes += 1
                served += probe(port) is not None
                next_probe += 1
            time.sleep(0.1)
        last = rss_kib(p.pid)
        alive = p.poll() is None
        return (name, rest, peak, last, served, probes, alive)
    finally:
        for s in socks:
            s.close()
        p.terminate()
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ringmaster")
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10)
    a = ap.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = tempfile.mkdtemp()
    ours = open(os.path.join(here, "peers", "ours-mc.toml")).read() + "\n[services.mc.memcache]\nmax_value_bytes = 2097152\n"
    ours_path = os.path.join(tmp, "ours.toml")
    open(ours_path, "w").write(ours)
    mcs = [subprocess.Popen(["memcached", "-u", "root", "-l", "127.0.0.1", "-p", str(p), "-U", "0", "-t", "1", "-m", "256", "-I", "2m", "-c", "20000"])
           for p in (27211, 27212, 27213)]
    cap = str(12 * 1024 ** 3)
    targets = [
        ("ringmaster", [a.ringmaster, "run", "--config", ours_path], 27220),
        ("nutcracker", ["prlimit", f"--as={cap}", "nutcracker", "-c", os.path.join(shared, "nutcracker.yml"), "-s", "27222"], 27221),
    ]
    rows = []
    try:
        for p in (27211, 27212, 27213):
            wait(p)
        for name, cmd, port in targets:
            rows.append(pinned(name, cmd, port, a.clients, a.seconds))
    finally:
        for m in mcs:
            m.terminate()
    asked = a.clients * 8 * VALUE // (1024 * 1024)
    print(f"{a.clients} clients each asking 8 x 1 MB with 35 bytes and never reading ({asked} MB asked), {a.seconds:.0f} s")
    print(f"{'proxy':<12} {'rest MiB':>9} {'peak MiB':>9} {'end MiB':>8} {'reader served':>14} {'alive':>6}")
    for name, rest, peak, last, served, probes, alive in rows:
        print(f"{name:<12} {rest / 1024:>9.0f} {peak / 1024:>9.0f} {last / 1024:>8.0f} {served:>9}/{probes:<4} {str(alive):>6}")
    if len(rows) == 2 and rows[1][2] > 0:
        print(f"peak RSS ratio ringmaster/nutcracker: {rows[0][2] / rows[1][2]:.3f}")


if __name__ == "__main__":
    main()
