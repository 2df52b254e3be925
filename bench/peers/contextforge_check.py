"""Checks a started ContextForge peer end to end (contextforge.sh check ...).

With the official MCP client (the `mcp` package in ContextForge's venv): initialize, then
tools/call of the permitted tool must return the upstream's result. With plain httpx: the same
call without a token must be refused with 401, a call to a tool the virtual server does not
expose must not succeed, and the answer's Content-Type and Mcp-Session-Id header are reported
(JSON or SSE; stateless or session). Exit 0 when all hold, 1 otherwise.
"""

import argparse
import asyncio
import sys

import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client

HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


async def via_sdk(url: str, token: str, tool: str) -> str:
    async with streamablehttp_client(url, headers={"Authorization": f"Bearer {token}"}) as (
        read,
        write,
        _,
    ):
        async with ClientSession(read, write) as session:
            await session.initialize()
            result = await session.call_tool(tool, {})
            if result.isError:
                raise RuntimeError(f"tools/call {tool} failed: {result.content}")
            return "".join(getattr(c, "text", "") for c in result.content)


def call(url: str, token: str | None, tool: str, session: str | None = None) -> httpx.Response:
    headers = dict(HEADERS)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if session:
        headers["Mcp-Session-Id"] = session
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": tool, "arguments": {}},
    }
    return httpx.post(url, json=body, headers=headers, timeout=30)


def initialize(url: str, token: str) -> str | None:
    """A raw initialize (+ notifications/initialized); the Mcp-Session-Id, if it gives one."""
    headers = dict(HEADERS, Authorization=f"Bearer {token}")
    params = {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "bench-check", "version": "0"},
    }
    r = httpx.post(
        url,
        json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params},
        headers=headers,
        timeout=30,
    )
    r.raise_for_status()
    session = r.headers.get("mcp-session-id")
    if session:
        headers["Mcp-Session-Id"] = session
    httpx.post(
        url,
        json={"jsonrpc": "2.0", "method": "notifications/initialized"},
        headers=headers,
        timeout=30,
    )
    return session


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--token-file", required=True)
    ap.add_argument("--tool", required=True)
    ap.add_argument("--denied-tool")
    ap.add_argument("--expect", default="octocat", help="text the upstream's result contains")
    a = ap.parse_args()
    with open(a.token_file, encoding="utf-8") as f:
        token = f.read().strip()

    failures = []
    text = asyncio.run(via_sdk(a.url, token, a.tool))
    print(f"sdk: initialize + tools/call {a.tool} -> {text!r}")
    if a.expect not in text:
        failures.append(f"the result lacks {a.expect!r}")

    r = call(a.url, None, a.tool)
    print(f"no token: HTTP {r.status_code} {r.text[:120]!r}")
    if r.status_code != 401:
        failures.append(f"no token answered {r.status_code}, not 401")

    r = call(a.url, token, a.tool)
    mode = "stateless" if r.status_code == 200 else "a session is required"
    ctype = r.headers.get("content-type")
    print(f"tools/call without initialize: HTTP {r.status_code}, Content-Type {ctype} ({mode})")

    session = initialize(a.url, token)
    print(f"initialize: Mcp-Session-Id {session}")
    r = call(a.url, token, a.tool, session)
    ctype = r.headers.get("content-type")
    print(f"tools/call after initialize: HTTP {r.status_code}, Content-Type {ctype}")
    if r.status_code != 200 or a.expect not in r.text:
        failures.append(f"a tools/call after initialize answered {r.status_code} {r.text[:200]!r}")

    if a.denied_tool:
        r = call(a.url, token, a.denied_tool, session)
        print(f"denied tool {a.denied_tool}: HTTP {r.status_code} {r.text[:160]!r}")
        if r.status_code == 200 and '"isError":false' in r.text.replace(" ", ""):
            failures.append(f"{a.denied_tool} was called")

    for f in failures:
        print(f"FAIL: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
