#!/usr/bin/env python3
"""Connection-level attacks at scale against a running `entitygate demo` (issue 19).

  bench/attacks.py [--bin target/release/entitygate] [--count 5000] [--tls-count 2000]

Standard library only, loopback only. Starts `entitygate demo` (default configuration, built-in
sandbox Composio) on a free port, once plain and once with the dev TLS certificate, and for
each attack:

  silent      N sockets that connect and send nothing
  preface     N sockets that send half an HTTP/2 preface (`PRI * HTTP/2.0\\r\\n`)
  h2-settings N sockets that send the whole HTTP/2 preface and SETTINGS, then no request
  head-15k    N sockets that send 15 KiB of an HTTP/1 request head and stop
  tls-silent  N sockets that complete a TLS handshake and then send nothing

it holds the N sockets open and reports: the gateway's RSS before and with them (from
/proc/<pid>/status), KiB per connection, whether a legitimate request (a plain GET without a
token: any answer proves a connection slot and a request slot were free) was answered while they
were held and in how long, and how many of the N were still open 12 s after the last one was opened
(the default `limits.header_read_timeout_secs` is 10 s from accept). Every process it starts is stopped by
PID when it ends. Prints one JSON line per attack, then a Markdown table.
"""

import argparse
import json
import os
import resource
import socket
import ssl
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"gateway did not listen on {port}")


def probe(port: int, tls_ctx) -> tuple:
    """One legitimate request; returns (status line, seconds)."""
    started = time.time()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if tls_ctx is not None:
            s = tls_ctx.wrap_socket(s, server_hostname="localhost")
        s.sendall(b"GET /api/v3.1/toolkits HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = s.recv(4096)
        s.close()
        line = data.split(b"\r\n", 1)[0].decode("latin-1")
    except OSError as e:
        line = f"error: {e}"
    return line, time.time() - started


def open_attack(kind: str, port: int, count: int, tls_ctx) -> list:
    pad = b"a" * (15 * 1024)
    socks = []
    for _ in range(count):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            if kind == "preface":
                s.sendall(b"PRI * HTTP/2.0\r\n")
            elif kind == "h2-settings":
                s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            elif kind == "head-15k":
                s.sendall(b"GET /api/v3.1/toolkits HTTP/1.1\r\nHost: x\r\nX-Pad: " + pad)
            elif kind == "tls-silent":
                s = tls_ctx.wrap_socket(s, server_hostname="localhost")
            s.setblocking(False)
            socks.append(s)
        except OSError:
            break
    return socks


def still_open(socks: list) -> int:
    """Sockets the gateway has not closed: reads whatever it sent until EOF or would-block."""
    n = 0
    for s in socks:
        while True:
            try:
                if s.recv(65536) == b"":
                    break  # closed
            except (BlockingIOError, ssl.SSLWantReadError):
                n += 1  # nothing more to read, and no close
                break
            except OSError:
                break  # reset
    return n


def run_gateway(binary: str, tls: bool):
    port = free_port()
    args = [binary, "demo", "--listen", f"127.0.0.1:{port}"]
    if tls:
        args += ["--tls-dir", os.path.join(ROOT, "certs/dev")]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "RUST_LOG": "warn"})
    wait_port(port)
    return proc, port


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/entitygate"))
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--tls-count", type=int, default=2000)
    ap.add_argument("--only", help="run only this attack")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tls_ctx = ssl.create_default_context(cafile=os.path.join(ROOT, "certs/dev/ca.crt"))
    rows = []
    plan = [(False, k, a.count) for k in ("silent", "preface", "h2-settings", "head-15k")]
    plan.append((True, "tls-silent", a.tls_count))
    plan = [p for p in plan if a.only in (None, p[1])]
    for tls, kind, count in plan:
        proc, port = run_gateway(a.bin, tls)
        ctx = tls_ctx if tls else None
        try:
            probe(port, ctx)
            time.sleep(0.5)
            before = rss_kib(proc.pid)
            started = time.time()
            socks = open_attack(kind, port, count, tls_ctx)
            opened_at = time.time()
            time.sleep(1.0)
            during = rss_kib(proc.pid)
            status, secs = probe(port, ctx)
            wait = 12.0 - (time.time() - opened_at)
            if wait > 0:
                time.sleep(wait)
            left = still_open(socks)
            for s in socks:
                s.close()
            row = {
                "attack": kind, "connections": len(socks),
                "open_secs": round(opened_at - started, 1), "rss_before_kib": before,
                "rss_during_kib": during,
                "kib_per_conn": round((during - before) / max(len(socks), 1), 1),
                "legit": status, "legit_secs": round(secs, 3), "open_after_12s": left,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    print("\n| attack | connections | RSS before MiB | RSS with them MiB | KiB per connection "
          "| legitimate request while held | still open 12 s after the last |")
    print("| --- | ---: | ---: | ---: | ---: | --- | ---: |")
    for r in rows:
        print(f"| {r['attack']} | {r['connections']} | {r['rss_before_kib'] / 1024:.1f} "
              f"| {r['rss_during_kib'] / 1024:.1f} | {r['kib_per_conn']} "
              f"| {r['legit']} in {r['legit_secs'] * 1000:.0f} ms | {r['open_after_12s']} |")


if __name__ == "__main__":
    sys.exit(main())
