#!/usr/bin/env python3
"""Connection-level load for bench/run.sh (standard library only, loopback only).

  conns.py idle  --port P --count N --token-file F --body-file B --hold S --ready-file R
      Opens N keep-alive connections, sends one tool execution on each and reads the answer,
      then keeps them all open and idle. Writes R (a JSON line) once every connection has been
      answered, holds for S seconds, then reports how many are still open.

  conns.py burst --port P --count N --token-file F --body-file B
      Opens N connections first, then sends one tool execution on each at the same moment
      (one cold user: the same token on every connection) and waits for every answer.
      Prints the status codes seen.
"""

import argparse
import asyncio
import json
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
    req = request(token, body)
    sem = asyncio.Semaphore(256)
    statuses: dict = {}

    async def one():
        reader, writer = await connect(args.port, sem)
        async with sem:
            writer.write(req)
            await writer.drain()
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
    # A connection the server closed reads EOF at once; an open one times out.
    still_open = 0
    for reader, _ in ok:
        try:
            data = await asyncio.wait_for(reader.read(1), timeout=0.001)
            if data:
                still_open += 1
        except asyncio.TimeoutError:
            still_open += 1
        except OSError:
            pass
    for _, writer in ok:
        writer.close()
    print(json.dumps({"opened": len(ok), "errors": errors, "statuses": statuses,
                      "still_open_after_hold": still_open, "hold_secs": args.hold}))
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


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["idle", "burst"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--token-file", required=True)
    p.add_argument("--body-file", required=True)
    p.add_argument("--hold", type=float, default=3.0)
    p.add_argument("--ready-file", default="/dev/null")
    args = p.parse_args()
    return asyncio.run(idle(args) if args.mode == "idle" else burst(args))


if __name__ == "__main__":
    sys.exit(main())
