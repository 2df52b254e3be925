#!/usr/bin/env bash
# IBM ContextForge (PyPI mcp-contextforge-gateway) as the Python reference peer of the MCP
# table (issue 32). Commands:
#
#   bench/peers/contextforge.sh install
#       A venv under ~/.cache/entitygate-bench/contextforge/<version> with the pinned version;
#       idempotent. Prints the venv path last. Exit 3 with one line on stderr when it cannot.
#   bench/peers/contextforge.sh start PORT UPSTREAM_URL OUTDIR
#       Starts ContextForge on 127.0.0.1:PORT in front of the Streamable HTTP MCP server at
#       UPSTREAM_URL (e.g. http://127.0.0.1:18001/mcp), its state (SQLite database, key copies,
#       log, token) in OUTDIR; about 40 s (it migrates a fresh database). Then prints on stdout:
#         PID=<gunicorn master, leader of its own process group>   PGID=<the same>
#         WORKERS=<n>   SERVER_ID=<virtual server id>
#         URL=http://127.0.0.1:PORT/servers/<id>/mcp   (the virtual server's MCP endpoint)
#         TOKEN_FILE=OUTDIR/token-alice.txt            (one RS256 JWT, one line)
#         TOOL=bench-up-github-get-the-authenticated-user  (the name tools/call must use: it
#              prefixes the gateway's name and slugs the upstream name)
#         DENIED_TOOL=<a tool the upstream has that the virtual server does not expose>
#       Exit 3 with one line on stderr when it cannot start; what it started is stopped then.
#   bench/peers/contextforge.sh check URL TOKEN_FILE TOOL [DENIED_TOOL]
#       With it running: initialize + tools/call with the official MCP client must return the
#       upstream's result, no token must get 401, DENIED_TOOL must not be called. Exit 0/1.
#   bench/peers/contextforge.sh stop PID
#       TERM to the process group (master and workers), KILL to what is left after 20 s. Its
#       shutdown takes about 4 s: a KILL to the master alone after 2 s would orphan workers.
#
# Environment: CF_WORKERS (default 1), CF_STATEFUL (default false), CF_JSON_RESPONSE (default
# true: JSON answers; false: one-event SSE answers), CF_ALLOWED_TOOLS (the upstream tool names
# the virtual server exposes; default the two alice may call), CF_PYTHON (python3, >= 3.11).
#
# How it runs, and why (the maintainers' production launcher, run-gunicorn.sh and
# gunicorn.config.py in their repository, with the changes a benchmark needs):
# - gunicorn with uvicorn workers (uvloop + httptools), the app preloaded, access log off,
#   error log to a file, log level ERROR (its default). Workers: CF_WORKERS, default 1. Their
#   run-gunicorn.sh derives 2*CPU+1 from nproc, a formula for sync workers; an uvicorn worker
#   is one event loop that already overlaps the upstream waits, and on the ONE CPU the proxy is
#   pinned to, more workers only time-slice that core and multiply the memory (a check pinned
#   to one CPU: 3 workers gave fewer calls per second for more CPU per call and twice the RSS).
#   CF_WORKERS=3 is their formula for one CPU.
# - SQLite in OUTDIR, no Redis (CACHE_TYPE=database, its choice without Redis).
# - JWT: RS256 (JWT_ALGORITHM, JWT_PUBLIC_KEY_PATH), audience "entitygate", issuer
#   "https://idp.bench/". It also insists on JWT_PRIVATE_KEY_PATH (it signs its own tokens), so
#   it gets the TEST-ONLY certs/dev/jwt-rsa.key too. Its token shape: "exp" and "jti" required
#   (REQUIRE_JTI, secure default), and the subject must be a user in its database
#   (REQUIRE_USER_IN_DB, secure default) whose id is an email address: "alice" is refused by its
#   user API, so the user is alice@idp.bench. The script creates her and mints her token
#   (bench_upstream mint writes no jti).
# - Tool-level authorization, what ContextForge has: a virtual server whose tool list is only
#   the permitted tools (a call to any other tool answers "Tool not found"), and RBAC: a new
#   user holds no tools.execute outside her personal team, so she gets a global role
#   "tool_caller" (servers.use, tools.read, tools.execute). Her token has no "teams" claim,
#   which it reads as public-only; the server and its tools are public.
# - Sessions: stateless by default (USE_STATEFUL_SESSIONS=false: no Mcp-Session-Id, initialize
#   optional), and then every tools/call opens a new upstream MCP session (initialize,
#   notifications/initialized, GET, tools/call, tools/list, DELETE: six upstream requests).
#   CF_STATEFUL=true: initialize required, one upstream session per client session, one
#   upstream request per tools/call, and GET opens a server stream. Without Redis a session
#   lives in one worker's memory, so with CF_WORKERS > 1 a session only works on the
#   connection (worker) that opened it.
# - Turned off because they would decide the benchmark, not the gateway: the rate limiter
#   (RATE_LIMITING_ENABLED; 100 tool calls per minute per user by default); SSRF protection for
#   loopback (SSRF_ALLOW_LOCALHOST: the upstream is on 127.0.0.1). Off as in its defaults: the
#   admin UI and admin API, observability, plugins.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VERSION=1.0.7.post20260921
CACHE=${ENTITYGATE_BENCH_CACHE:-$HOME/.cache/entitygate-bench}
VENV="$CACHE/contextforge/$VERSION"
PY=${CF_PYTHON:-python3}
ISSUER="https://idp.bench/"
AUDIENCE="entitygate"
PUB="$ROOT/certs/dev/jwt-rsa.pub"   # TEST-ONLY
KEY="$ROOT/certs/dev/jwt-rsa.key"   # TEST-ONLY
GATEWAY_NAME="bench-up"
# The upstream's tools that alice may call; the others stay outside the virtual server.
ALLOWED_TOOLS=${CF_ALLOWED_TOOLS:-"GITHUB_GET_THE_AUTHENTICATED_USER GITHUB_CREATE_AN_ISSUE"}

die() { echo "contextforge: $*" >&2; exit 3; }

install() {
  if [ -f "$VENV/.installed" ] && "$VENV/bin/python" -c 'import mcpgateway' 2>/dev/null; then
    echo "$VENV"
    return
  fi
  command -v "$PY" >/dev/null || die "no $PY to create the venv with"
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "mcp-contextforge-gateway needs Python >= 3.11; $PY is $("$PY" --version 2>&1)"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PY" -m venv "$VENV" >&2 || die "python3 -m venv failed"
  "$VENV/bin/pip" install --quiet "mcp-contextforge-gateway==$VERSION" >&2 \
    || { rm -rf "$VENV"; die "pip install mcp-contextforge-gateway==$VERSION failed"; }
  echo "$VERSION" > "$VENV/.installed"
  echo "$VENV"
}

# The environment ContextForge reads its settings from (pydantic-settings, one variable each).
cf_env() { # cf_env PORT OUTDIR
  local port=$1 out=$2
  export HOST=127.0.0.1 PORT="$port"
  export ENVIRONMENT=production
  export DATABASE_URL="sqlite:///$out/contextforge.db"
  export CACHE_TYPE=database
  export JWT_ALGORITHM=RS256
  export JWT_PUBLIC_KEY_PATH="$out/jwt-rsa.pub" JWT_PRIVATE_KEY_PATH="$out/jwt-rsa.key"
  export JWT_AUDIENCE="$AUDIENCE" JWT_ISSUER="$ISSUER"
  export AUTH_REQUIRED=true MCP_REQUIRE_AUTH=true MCP_CLIENT_AUTH_ENABLED=true
  export REQUIRE_JTI=true REQUIRE_USER_IN_DB=true
  # Secrets it insists on even with RS256 (the HS fallback, stored-credential encryption):
  # fresh random ones per start, TEST-ONLY.
  JWT_SECRET_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  AUTH_ENCRYPTION_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  export JWT_SECRET_KEY AUTH_ENCRYPTION_SECRET
  export PLATFORM_ADMIN_EMAIL=admin@bench.local
  PLATFORM_ADMIN_PASSWORD=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')Aa1!
  export PLATFORM_ADMIN_PASSWORD
  export MCPGATEWAY_UI_ENABLED=false MCPGATEWAY_ADMIN_API_ENABLED=false
  export RATE_LIMITING_ENABLED=false
  # The unversioned REST aliases are past their sunset date (it says so in its log, asking for
  # this); the MCP endpoint /servers/<id>/mcp is not one of them.
  export LEGACY_API_ENABLED=false
  export SSRF_ALLOW_LOCALHOST=true
  export USE_STATEFUL_SESSIONS=${CF_STATEFUL:-false} JSON_RESPONSE_ENABLED=${CF_JSON_RESPONSE:-true}
  export LOG_LEVEL=ERROR LOG_TO_FILE=false
}

start() { # start PORT UPSTREAM_URL OUTDIR
  [ $# -eq 3 ] || { echo "usage: $0 start PORT UPSTREAM_URL OUTDIR" >&2; exit 2; }
  local port=$1 upstream=$2 out=$3 workers=${CF_WORKERS:-1}
  [ -x "$VENV/bin/gunicorn" ] || die "not installed: run $0 install first"
  mkdir -p "$out"
  out=$(cd "$out" && pwd)
  cp "$PUB" "$out/jwt-rsa.pub"
  cp "$KEY" "$out/jwt-rsa.key"
  chmod 600 "$out/jwt-rsa.key"
  cf_env "$port" "$out"
  cd "$out"
  # setsid: the master leads its own process group, so run.sh can stop everything by PID.
  setsid "$VENV/bin/gunicorn" -c "$ROOT/bench/peers/contextforge_gunicorn.py" \
    --workers "$workers" --bind "127.0.0.1:$port" \
    --access-logfile /dev/null --error-logfile "$out/contextforge.log" \
    --pid "$out/gunicorn.pid" mcpgateway.main:app </dev/null >>"$out/contextforge.log" 2>&1 &
  local pid=$!
  local ok=0
  for _ in $(seq 1 240); do
    kill -0 "$pid" 2>/dev/null || break
    if curl -fsS -o /dev/null "http://127.0.0.1:$port/health" 2>/dev/null; then ok=1; break; fi
    sleep 0.5
  done
  if [ "$ok" != 1 ]; then
    stop "$pid"
    die "did not come up on port $port: see $out/contextforge.log"
  fi
  if ! "$VENV/bin/python" "$ROOT/bench/peers/contextforge_setup.py" \
      --base "http://127.0.0.1:$port" --upstream "$upstream" --out "$out" \
      --key "$out/jwt-rsa.key" --issuer "$ISSUER" --audience "$AUDIENCE" \
      --admin "$PLATFORM_ADMIN_EMAIL" --gateway-name "$GATEWAY_NAME" \
      --allow $ALLOWED_TOOLS > "$out/setup.env" 2>>"$out/setup.log"; then
    stop "$pid"
    die "setup (gateway, user, server) failed: see $out/setup.log"
  fi
  echo "PID=$pid"
  echo "PGID=$pid"
  echo "WORKERS=$workers"
  cat "$out/setup.env"
}

stop() { # stop PID
  [ $# -eq 1 ] || { echo "usage: $0 stop PID" >&2; exit 2; }
  kill -TERM -- "-$1" 2>/dev/null || return 0
  for _ in $(seq 1 100); do
    kill -0 -- "-$1" 2>/dev/null || return 0
    sleep 0.2
  done
  kill -KILL -- "-$1" 2>/dev/null || true
}

check() { # check URL TOKEN_FILE TOOL [DENIED_TOOL]
  [ $# -ge 3 ] || { echo "usage: $0 check URL TOKEN_FILE TOOL [DENIED_TOOL]" >&2; exit 2; }
  local denied=()
  [ $# -ge 4 ] && denied=(--denied-tool "$4")
  "$VENV/bin/python" "$ROOT/bench/peers/contextforge_check.py" --url "$1" --token-file "$2" \
    --tool "$3" "${denied[@]}"
}

case "${1:-}" in
  install) install ;;
  check) shift; check "$@" ;;
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  *)
    echo "usage: $0 install | start PORT UPSTREAM_URL OUTDIR" >&2
    echo "       | check URL TOKEN_FILE TOOL [DENIED_TOOL] | stop PID" >&2
    exit 2 ;;
esac
