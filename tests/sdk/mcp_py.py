"""Drives the official MCP Python SDK (PyPI `mcp` 2.3.0) over Streamable HTTP through a plan
and prints one JSON line per step, then a summary line.

The plan (JSON in MCP_PLAN) says where to connect and what to do; the Rust test that wrote it
(tests/mcp_clients.rs) judges the outcomes, so this driver only reports what the SDK did:

    {"connect": {"url": "...", "headers": {"x-api-key": "..."}, "mode": "legacy"},
     "steps": [{"name": "list", "op": "list_tools"},
               {"name": "run", "op": "call", "tool": "T", "arguments": {}},
               {"name": "leave", "op": "call_and_leave", "tool": "T", "arguments": {}, "after_ms": 300}]}

`connect` may instead be {"composio_session": {"user_id": "...", "toolkits": [...]}}: the
session is created with the composio SDK (`composio.sessions.create(user_id=..., mcp=True)`,
COMPOSIO_BASE_URL and COMPOSIO_API_KEY from the environment) and the MCP client then uses
exactly `session.mcp.url` and `session.mcp.headers`.

`mode` is the SDK's own: "legacy" (initialize handshake, Mcp-Session-Id), "auto" (probe
`server/discover`, fall back to initialize) or "2026-07-28" (stateless, no probe).

Step records: {"step", "outcome": "success"|"error", "result"|"error"}. A failing step does not
stop the plan; a failing connect does (the remaining steps are not run). The summary's "ok" is
false only when the driver itself broke."""

import asyncio
import json
import logging
import os
import sys
import traceback
import warnings

import anyio

PLAN = json.loads(os.environ["MCP_PLAN"])


def emit(**record):
    print(json.dumps(record, default=str), flush=True)


def error_info(exc):
    # Exception groups (anyio task groups) hide the cause: report the innermost one.
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    info = {"type": type(exc).__name__, "message": str(exc)[:800]}
    err = getattr(exc, "error", None)
    code = getattr(err, "code", None)
    if code is not None:
        info["code"] = code
    return info


def call_result(r):
    d = r.model_dump(mode="json", by_alias=True, exclude_none=True)
    text = "".join(c.get("text", "") for c in d.get("content", []) if c.get("type") == "text")
    return {
        "isError": bool(d.get("isError")),
        "text": text,
        "structuredContent": d.get("structuredContent"),
    }


def composio_session(spec):
    """Creates a session with the composio SDK; answers (url, headers, what was seen)."""
    from composio import Composio

    captured = []

    class Capture(logging.Handler):
        def emit(self, record):
            captured.append(record.getMessage())

    logging.getLogger().addHandler(Capture(level=logging.WARNING))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        composio = Composio(
            api_key=os.environ["COMPOSIO_API_KEY"],
            base_url=os.environ["COMPOSIO_BASE_URL"],
            allow_tracking=False,
        )
        kwargs = {"user_id": spec["user_id"], "mcp": True}
        if spec.get("toolkits"):
            kwargs["toolkits"] = spec["toolkits"]
        session = composio.sessions.create(**kwargs)
    warned = [str(w.message) for w in caught] + [m for m in captured if "MCP" in m or "origin" in m]
    url = session.mcp.url
    headers = {k: v for k, v in (session.mcp.headers or {}).items() if v is not None}
    seen = {
        "session_id": session.session_id,
        "mcp_url": url,
        "mcp_type": str(getattr(session.mcp, "type", "")),
        "header_names": sorted(headers),
        "warnings": warned,
    }
    return url, headers, seen


async def run():
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    connect = PLAN["connect"]
    if "composio_session" in connect:
        try:
            url, headers, seen = await anyio.to_thread.run_sync(composio_session, connect["composio_session"])
        except Exception as exc:  # noqa: BLE001
            emit(step="session", outcome="error", error=error_info(exc))
            return
        emit(step="session", outcome="success", result=seen)
    else:
        url, headers = connect["url"], connect.get("headers", {})
    mode = connect.get("mode", "legacy")

    http = create_mcp_http_client(headers=headers)
    client = Client(
        streamable_http_client(url, http_client=http),
        mode=mode,
        read_timeout_seconds=float(PLAN.get("timeout_s", 20)),
        cache=None,
    )
    connected = False
    try:
        async with http, client:
            connected = True
            emit(
                step="connect",
                outcome="success",
                result={
                    "protocol_version": client.protocol_version,
                    "server": client.server_info.name if client.server_info else None,
                },
            )
            for s in PLAN.get("steps", []):
                await run_step(client, s)
    except Exception as exc:  # noqa: BLE001
        emit(step="close" if connected else "connect", outcome="error", error=error_info(exc))


async def run_step(client, s):
    name, op = s["name"], s["op"]
    try:
        if op == "list_tools":
            r = await client.list_tools()
            result = {"tools": [t.name for t in r.tools]}
        elif op == "call":
            r = await client.call_tool(s["tool"], s.get("arguments", {}))
            result = call_result(r)
        elif op == "call_and_leave":
            # Start the call, give the server `after_ms` to start answering, then walk away:
            # the SDK cancels the request (closing its stream).
            left = False
            with anyio.move_on_after(s.get("after_ms", 300) / 1000) as scope:
                await client.call_tool(s["tool"], s.get("arguments", {}))
            left = scope.cancelled_caught
            result = {"left": left}
        elif op == "ping":
            await client.send_ping()
            result = {}
        else:
            raise ValueError(f"unknown op {op}")
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        emit(step=name, outcome="error", error=error_info(exc))
        return
    emit(step=name, outcome="success", result=result)


def main():
    ok = True
    try:
        anyio.run(run)
    except BaseException as exc:  # noqa: BLE001
        ok = False
        emit(step="driver", outcome="error", error=error_info(exc), trace=traceback.format_exc()[-2000:])
    emit(summary=True, ok=ok, sdk="mcp (python)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
