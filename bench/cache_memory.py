#!/usr/bin/env python3
"""Memory per cached object: ringmaster caching N distinct small responses
from its built-in backend; RSS growth minus the body bytes and the stored
header field bytes (as they go on the wire, but for the fields each answer
sets itself), per object.

    cache_memory.py RINGMASTER_BINARY [N]
"""
import os
import socket
import subprocess
import sys
import tempfile
import time

rm = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 50_000


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def wait(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing on port {port}")


bport, pport, aport = free_port(), free_port(), free_port()
backend = subprocess.Popen([rm, "backend", "--listen", f"127.0.0.1:{bport}", "--name", "b"], stderr=subprocess.DEVNULL)
cfg = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
cfg.write(f"""[admin]
listen = "127.0.0.1:{aport}"
[[listeners]]
name = "m"
listen = "127.0.0.1:{pport}"
[[routes]]
service = "s"
cache = {{ memory_bytes = 1073741824 }}
[services.s]
kind = "replicated"
endpoints = [{{ address = "127.0.0.1:{bport}" }}]
""")
cfg.close()
proxy = subprocess.Popen([rm, "run", "--config", cfg.name], stderr=subprocess.DEVNULL)
try:
    wait(bport)
    wait(pport)
    sock = socket.create_connection(("127.0.0.1", pport))

    def get(path):
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: m\r\n\r\n".encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += sock.recv(65536)
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")[1:]
        length = int([l.split(b":")[1] for l in lines if l.lower().startswith(b"content-length")][0])
        while len(body) < length:
            body += sock.recv(65536)
        # The fields the cache stores: all but those each answer sets itself.
        per_answer = (b"age:", b"x-cache:", b"cache-status:", b"content-length:", b"connection:")
        stored = sum(len(l) + 2 for l in lines if not l.lower().startswith(per_answer))
        return len(body), stored

    for i in range(100):
        get(f"/cc/warm{i}?cc=max-age=600")
    before = rss_kib(proxy.pid)
    got = [get(f"/cc/o{i}?cc=max-age=600") for i in range(n)]
    body_bytes = sum(b for b, _ in got)
    field_bytes = sum(f for _, f in got)
    time.sleep(0.5)
    after = rss_kib(proxy.pid)
    grown = (after - before) * 1024
    print(f"\ncached objects: {n}, body bytes {body_bytes}, stored header bytes {field_bytes}, RSS growth {grown} bytes")
    print(
        f"memory per cached object: {grown / n:.0f} bytes, of which body {body_bytes / n:.0f} and stored header fields"
        f" {field_bytes / n:.0f}: overhead {(grown - body_bytes - field_bytes) / n:.0f} bytes"
    )
finally:
    proxy.terminate()
    backend.terminate()
    os.unlink(cfg.name)
