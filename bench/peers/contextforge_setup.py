"""Configures a running ContextForge for the MCP benchmark (called by contextforge.sh start).

Through its REST API, as an operator would: registers the upstream MCP server as a gateway,
creates user alice, creates a public virtual server that exposes only the permitted tools, and
mints alice's token. Prints key=value lines (URL, TOKEN_FILE, TOOL, DENIED_TOOL, SERVER_ID) on
stdout; progress and errors go to stderr. Runs in ContextForge's venv (httpx, PyJWT).

Tokens are RS256 with the TEST-ONLY key certs/dev/jwt-rsa.key, in the shape ContextForge
requires: exp and jti (REQUIRE_JTI), a subject that is a user in its database.
"""

import argparse
import secrets
import sys
import time
import uuid

import httpx
import jwt


def mint(key_pem: str, issuer: str, audience: str, sub: str, ttl: int, **extra) -> str:
    now = int(time.time())
    claims = {
        "sub": sub,
        "iss": issuer,
        "aud": audience,
        "iat": now,
        "exp": now + ttl,
        "jti": str(uuid.uuid4()),
    }
    claims.update(extra)
    return jwt.encode(claims, key_pem, algorithm="RS256")


def check(r: httpx.Response, what: str) -> dict | list:
    if r.status_code >= 300:
        sys.exit(f"{what}: HTTP {r.status_code}: {r.text[:500]}")
    return r.json()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--issuer", required=True)
    ap.add_argument("--audience", required=True)
    ap.add_argument("--admin", required=True, help="the platform admin's email (bootstrapped user)")
    ap.add_argument("--user", default="alice@idp.bench")
    ap.add_argument("--gateway-name", required=True)
    ap.add_argument(
        "--allow", nargs="+", required=True, help="upstream tool names the server exposes"
    )
    ap.add_argument("--ttl", type=int, default=24 * 3600)
    a = ap.parse_args()

    with open(a.key, encoding="utf-8") as f:
        key_pem = f.read()
    admin = mint(key_pem, a.issuer, a.audience, a.admin, 3600, is_admin=True, teams=None)
    c = httpx.Client(base_url=a.base, headers={"Authorization": f"Bearer {admin}"}, timeout=60)

    gw = check(
        c.post(
            "/v1/gateways",
            json={
                "name": a.gateway_name,
                "url": a.upstream,
                "transport": "STREAMABLEHTTP",
                "visibility": "public",
            },
        ),
        "register gateway",
    )
    print(f"gateway {gw.get('id')} registered", file=sys.stderr)

    # The gateway's tools are discovered at registration (tools/list on the upstream).
    tools: list = []
    for _ in range(60):
        listed = check(
            c.get("/v1/tools", params={"limit": 0, "include_pagination": "false"}), "list tools"
        )
        tools = listed if isinstance(listed, list) else listed.get("tools", listed.get("items", []))
        tools = [t for t in tools if t.get("gatewayId", t.get("gateway_id")) == gw["id"]]
        if tools:
            break
        time.sleep(0.5)
    if not tools:
        sys.exit("no tools discovered from the upstream")

    def original(t: dict) -> str:
        return t.get("originalName") or t.get("original_name") or t["name"]

    allowed = [t for t in tools if original(t) in a.allow]
    denied = [t for t in tools if original(t) not in a.allow]
    if len(allowed) != len(a.allow):
        sys.exit(f"upstream lacks some of {a.allow}: has {[original(t) for t in tools]}")

    # A random password now and then trips its password policy ("too many sequential
    # characters"): a few fresh ones before giving up.
    for _ in range(8):
        password = secrets.token_urlsafe(16) + "Aa1!"
        user = c.post(
            "/v1/auth/email/admin/users",
            json={"email": a.user, "password": password, "full_name": a.user, "is_admin": False},
        )
        if not (user.status_code == 400 and "assword" in user.text):
            break
    check(user, f"create user {a.user}")
    # A new user holds platform_viewer (no tools.execute) globally, and team_admin only in a
    # personal team her token does not name. RBAC grants the call: a global role with just the
    # permissions a tool caller needs; which tools she reaches is the virtual server's list.
    role = check(
        c.post(
            "/v1/rbac/roles",
            json={
                "name": "tool_caller",
                "description": "calls the tools of the servers it sees",
                "scope": "global",
                "permissions": ["servers.use", "tools.read", "tools.execute"],
            },
        ),
        "create role tool_caller",
    )
    check(
        c.post(f"/v1/rbac/users/{a.user}/roles", json={"role_id": role["id"], "scope": "global"}),
        "assign role tool_caller",
    )

    server = check(
        c.post(
            "/v1/servers",
            json={
                "server": {
                    "name": "bench-github",
                    "description": "the tools alice may call",
                    "associated_tools": [t["id"] for t in allowed],
                },
                "visibility": "public",
            },
        ),
        "create server",
    )
    token = mint(key_pem, a.issuer, a.audience, a.user, a.ttl)
    token_file = f"{a.out}/token-alice.txt"
    with open(token_file, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    first = next(t for t in allowed if original(t) == a.allow[0])
    print(f"SERVER_ID={server['id']}")
    print(f"URL={a.base}/servers/{server['id']}/mcp")
    print(f"TOKEN_FILE={token_file}")
    print(f"TOOL={first['name']}")
    if denied:
        print(f"DENIED_TOOL={denied[0]['name']}")


if __name__ == "__main__":
    main()
