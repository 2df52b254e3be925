#!/usr/bin/env python3
"""Connection-level load for bench/run.sh (standard library only, loopback only).

  conns.py idle  --port P --count N --token-file F --body-file B --hold S --ready-file R
      Opens N keep-alive connections, sends one tool execution on each and reads the answer,
      then keeps them all open and idle. Writes R (a JSON line) once every connection has been
      answered, holds for S seconds, then reports how many are still open. With --h2 the
      connections speak HTTP/2 with prior knowledge (h2c): preface, SETTINGS, one request on
      stream 1 (HPACK literals, no Huffman), the answer read to END_STREAM.

  conns.py burst --port P --count N --token-file F --body-file B
      Opens N connections first, then sends one tool execution on each at the same moment
      (one cold user: the same token on every connection) and waits for every answer.
      Prints the status codes seen.
"""

import argparse
import asyncio
import json
import struct
import sys
import time

PATH = "/api/v3.1/tools/execute/GITHUB_CREATE_AN_ISSUE"


def request(token: str, body: bytes) -> bytes:
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    chunked = False
    for line in lines[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == "content-length":
            length = int(v.strip())
        if k.strip().lower() == "transfer-encoding" and "chunked" in v.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readline()).split(b";")[0].strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


# --- HTTP/2 (h2c, prior knowledge), just enough for one request per connection ---------------
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x4, 0x6, 0x7
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1


def h2_frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + \
        struct.pack(">I", stream) + payload


def hpack_int(value: int, prefix_bits: int) -> bytes:
    """RFC 7541 5.1 integer, first byte's high bits zero."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([value])
    out = [limit]
    value -= limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def hpack_literal(name: str, value: str) -> bytes:
    """Literal header field without indexing, new name, no Huffman (RFC 7541 6.2.2)."""
    n, v = name.encode(), value.encode()
    return b"\x00" + hpack_int(len(n), 7) + n + hpack_int(len(v), 7) + v


def h2_request(token: str, body: bytes) -> bytes:
    block = b"".join(hpack_literal(k, v) for k, v in [
        (":method", "POST"), (":scheme", "http"), (":authority", "127.0.0.1"),
        (":path", PATH), ("authorization", f"Bearer {token}"),
        ("content-type", "application/json"), ("content-length", str(len(body)))])
    return (H2_PREFACE + h2_frame(SETTINGS, 0, 0)
            + h2_frame(HEADERS, END_HEADERS, 1, block)
            + h2_frame(DATA, END_STREAM, 1, body))


async def h2_read_frame(reader: asyncio.StreamReader):
    head = await reader.readexactly(9)
    length = int.from_bytes(head[:3], "big")
    stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
    return head[3], head[4], stream, await reader.readexactly(length)


async def h2_read_response(reader, writer) -> int:
    """Reads frames until stream 1 ends; acknowledges SETTINGS and PING. Returns 200 when
    the answer's first header is the static table's `:status 200` (0x88), else 0."""
    status = 0
    while True:
        kind, flags, stream, payload = await h2_read_frame(reader)
        if kind == SETTINGS and not flags & ACK:
            writer.write(h2_frame(SETTINGS, ACK, 0))
        elif kind == PING and not flags & ACK:
            writer.write(h2_frame(PING, ACK, 0, payload))
        elif kind == GOAWAY:
            raise ConnectionError("GOAWAY before the answer")
        elif stream == 1 and kind == HEADERS and status == 0:
            status = 200 if payload[:1] == b"\x88" else -1
        if stream == 1 and kind in (HEADERS, DATA) and flags & END_STREAM:
            await writer.drain()
            return status if status > 0 else 0


async def connect(port: int, sem: asyncio.Semaphore):
    async with sem:
        for attempt in range(5):
            try:
                return await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05 * (attempt + 1))
        return await asyncio.open_connection("127.0.0.1", port)


async def idle(args) -> int:
    token = open(args.token_file).read().split()[0]
    body = open(args.body_file, "rb").read()
    req = h2_request(token, body) if args.h2 else request(token, body)
    sem = asyncio.Semaphore(256)
    statuses: dict = {}

    async def one():
        reader, writer = await connect(args.port, sem)
        async with sem:
            writer.write(req)
            await writer.drain()
            if args.h2:
                st = await h2_read_response(reader, writer)
            else:
                st = await read_response(reader)
        statuses[st] = statuses.get(st, 0) + 1
        return reader, writer

    started = time.monotonic()
    conns = await asyncio.gather(*(one() for _ in range(args.count)), return_exceptions=True)
    ok = [c for c in conns if not isinstance(c, BaseException)]
    errors = len(conns) - len(ok)
    with open(args.ready_file, "w") as f:
        f.write(json.dumps({"open": len(ok), "errors": errors, "statuses": statuses,
                            "setup_secs": round(time.monotonic() - started, 2)}) + "\n")
    await asyncio.sleep(args.hold)
    # A connection the server closed reads EOF at once; an open one times out. Over HTTP/2 a
    # server closing an idle connection sends GOAWAY first: that counts as closed.
    still_open = 0
    for reader, _ in ok:
        try:
            data = await asyncio.wait_for(reader.read(65536), timeout=0.001)
            if data and not (args.h2 and h2_has_goaway(data)):
                still_open += 1
        except asyncio.TimeoutError:
            still_open += 1
        except OSError:
            pass
    for _, writer in ok:
        writer.close()
    print(json.dumps({"opened": len(ok), "errors": errors, "statuses": statuses,
                      "still_open_after_hold": still_open, "hold_secs": args.hold,
                      "protocol": "h2c" if args.h2 else "http/1.1"}))
    return 0 if errors == 0 else 1


async def burst(args) -> int:
    token = open(args.token_file).read().split()[0]
    body = open(args.body_file, "rb").read()
    req = request(token, body)
    sem = asyncio.Semaphore(256)
    conns = await asyncio.gather(*(connect(args.port, sem) for _ in range(args.count)))
    go = asyncio.Event()

    async def fire(reader, writer):
        await go.wait()
        writer.write(req)
        await writer.drain()
        st = await read_response(reader)
        writer.close()
        return st

    tasks = [asyncio.ensure_future(fire(r, w)) for r, w in conns]
    await asyncio.sleep(0.1)
    started = time.monotonic()
    go.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    statuses: dict = {}
    for r in results:
        key = r if isinstance(r, int) else type(r).__name__
        statuses[key] = statuses.get(key, 0) + 1
    print(json.dumps({"requests": args.count, "statuses": statuses,
                      "secs": round(time.monotonic() - started, 3)}))
    return 0 if statuses.get(200) == args.count else 1


def h2_has_goaway(data: bytes) -> bool:
    """Whether the frames buffered in data (from a frame boundary) include a GOAWAY."""
    i = 0
    while i + 9 <= len(data):
        if data[i + 3] == GOAWAY:
            return True
        i += 9 + int.from_bytes(data[i:i + 3], "big")
    return False


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["idle", "burst"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--token-file", required=True)
    p.add_argument("--body-file", required=True)
    p.add_argument("--hold", type=float, default=3.0)
    p.add_argument("--ready-file", default="/dev/null")
    p.add_argument("--h2", action="store_true", help="idle: HTTP/2 with prior knowledge")
    args = p.parse_args()
    return asyncio.run(idle(args) if args.mode == "idle" else burst(args))


if __name__ == "__main__":
    sys.exit(main())
