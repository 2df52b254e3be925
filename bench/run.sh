#!/usr/bin/env bash
# entitygate against the proxies people would use instead (issue 8). One command:
#
#   bench/run.sh            # the full run (about 11 minutes; 15 with EG_BEFORE; the mcp
#                           # group adds about 15, most of it ContextForge, and agentgateway's
#                           # first build), results in target/bench/<time>-full/
#   bench/run.sh --smoke    # tiny numbers, about two minutes: checks that everything works
#   EG_BEFORE=/path/to/old/entitygate bench/run.sh     # + the same rows with an older binary
#   bench/run.sh --only entitygate,bodies               # just those groups
#   bench/run.sh --only steps --repeat 3                # the decision steps' A/B (issue 32)
#
# Options: --no-install (do not apt-get nginx/haproxy/wrk/h2load), --no-build (use built
# binaries), --out DIR, --only LIST (comma-separated groups, default all: direct, nginx,
# haproxy, entitygate, cold, bodies, idle, burst, h2, tls, ceiling, steps, mcp), --repeat N (run
# each entitygate row, or before/after pair, or round of steps variants or of MCP calls rows, N
# times in alternation; the before -> after, steps and MCP tables show medians).
# Environment: EG_BIN=/path/to/entitygate benchmarks that binary instead of the freshly built
# one. EG_BEFORE=/path/to/entitygate also runs the main entitygate rows (warm, no token cache,
# cold, bodies, idle, h2, tls) with that binary, labelled entitygate-before-..., each right
# before the same row with the current binary, and the report gets a "before -> after" table.
# BENCH_UP_ALPN (default "h2,http/1.1") is what the TLS upstream offers in ALPN.
# STEPS=VARIANT (default all) is the bench/steps/VARIANT.toml every entitygate row runs with
# (argument constraints, approvals, the tool lock); `STEPS=none` for an EG_BEFORE binary older
# than those settings. The steps group runs each variant in turn (see "steps" below).
# MCP_SKIP_TARGETS="direct agentgateway ..." leaves those targets out of the mcp group (to rerun
# one peer alone; the MCP table is meant to come from one run of them all).
#
# What runs, all on 127.0.0.1: bench_upstream (examples/bench_upstream.rs, a fast stand-in for
# Composio), and in turn each proxy in front of it: nginx (plain proxy_pass, keep-alive
# upstream), HAProxy 2.6 (jwt_verify + forward), entitygate (every check on), and (group
# ceiling) a minimal hyper proxy built from entitygate's own server settings and upstream
# client with no checks (examples/bench_minimal_proxy.rs). The load generator is wrk with bench/wrk.lua (h2load for the HTTP/2 rows). On a machine with 2+ cores
# the proxy is pinned to CPU 0 and the load generator and the upstream to CPU 1 (`taskset`).
# Everything this script starts is stopped by PID when it ends, also on error or Ctrl-C.
#
# Group mcp (issue 32): MCP tools/call through entitygate (front door /mcp and /v3/mcp/{id}),
# agentgateway (bench/peers/agentgateway.sh builds it) and ContextForge
# (bench/peers/contextforge.sh installs it) and to the MCP stand-in directly, with JSON and SSE
# answers, one load generator (examples/bench_mcp_load.rs); a peer that cannot be built or
# started here gets a "not measured" row with the reason. AGW_BIN=/path skips the build;
# AGW_MCP_PATH (default /mcp) is the path agentgateway serves MCP on in its template.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH="$ROOT/bench"
MODE=full
INSTALL=1
BUILD=1
OUT=""
ALL_GROUPS="direct,nginx,haproxy,entitygate,cold,bodies,idle,burst,h2,tls,ceiling,steps,mcp"
ONLY=$ALL_GROUPS
REPEAT=1
usage() {
  echo "usage: bench/run.sh [--smoke] [--no-install] [--no-build] [--out DIR] [--only GROUPS] [--repeat N]" >&2
  echo "  GROUPS: comma-separated, of $ALL_GROUPS" >&2
  echo "  (mcp: the MCP gateways; AGW_BIN=/path/to/agentgateway skips its build)" >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) MODE=smoke ;;
    --no-install) INSTALL=0 ;;
    --no-build) BUILD=0 ;;
    --out) [ $# -ge 2 ] || usage; OUT="$2"; shift ;;
    --only) [ $# -ge 2 ] || usage; ONLY="$2"; shift ;;
    --repeat) [ $# -ge 2 ] || usage; REPEAT="$2"; shift ;;
    *) usage ;;
  esac
  shift
done
case "$REPEAT" in ''|*[!0-9]*|0) echo "--repeat takes a count >= 1" >&2; usage ;; esac
for g in ${ONLY//,/ }; do
  case ",$ALL_GROUPS," in *",$g,"*) ;; *) echo "unknown group: $g" >&2; usage ;; esac
done
want() { # want GROUP: whether --only selected it
  case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac
}

if [ "$MODE" = full ]; then
  SAT_SECS=10      # saturation run
  RATE_SECS=10     # fixed-rate latency run
  WARM_SECS=2      # warm-up before each measured run
  CONNS=50         # connections at saturation
  RATE=5000        # the moderate rate, requests/s
  USERS=10000      # distinct users
  COLD_USERS=200000 # tokens for the cold runs (each used once)
  BODY_SECS=5
  IDLE=10000
  BURST=1000
else
  SAT_SECS=1; RATE_SECS=1; WARM_SECS=1; CONNS=8; RATE=200; USERS=100; COLD_USERS=5000
  BODY_SECS=1; IDLE=200; BURST=50
fi
DELAY_MS=10                              # mean pause per connection in the rate runs
RATE_CONNS=$(( RATE * DELAY_MS / 1000 )) # connections that, pausing DELAY_MS, give RATE
[ "$RATE_CONNS" -ge 1 ] || RATE_CONNS=1

UP_PORT=18001; UP2_PORT=18002; UP_TLS_PORT=18003
EG_PORT=18080; NGINX_PORT=18081; HAPROXY_PORT=18082; MIN_PORT=18083
H2_STREAMS=10                            # concurrent streams per HTTP/2 connection (h2load -m)
UP_ALPN=${BENCH_UP_ALPN:-h2,http/1.1}    # what the TLS upstream offers
CERT="$ROOT/certs/dev/server.crt"; CERT_KEY="$ROOT/certs/dev/server.key"   # TEST-ONLY
CA="$ROOT/certs/dev/ca.crt"
SECRET="bench-only-hs256-secret-0123456789abcdef"   # TEST-ONLY
ISSUER="https://idp.bench/"
AUDIENCE="entitygate"
TOOL_PATH="/api/v3.1/tools/execute/GITHUB_CREATE_AN_ISSUE"

OUT=${OUT:-"$ROOT/target/bench/$(date +%Y%m%d-%H%M%S)-$MODE"}
mkdir -p "$OUT/bin" "$OUT/tmp"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"
LOG="$OUT/run.log"

log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$LOG" >&2; }

# --- processes: every PID started here is stopped at exit -----------------------------------
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
  done
  PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget() { # forget PID: it has ended
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

stop() { # stop PID: stop one process we started, wait for it, forget it
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  forget "$pid"
}

wait_port() { # wait_port PORT: until something listens
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "nothing listens on $1"; return 1
}

port_free() {
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    log "port $1 is in use: stop whatever listens there first"; exit 1
  fi
}

# --- set-up ---------------------------------------------------------------------------------
NCPU=$(nproc)
if [ "$NCPU" -ge 2 ]; then
  PIN_PROXY="taskset -c 0"; PIN_LOAD="taskset -c 1"; PIN_UP="taskset -c 1"
  PINNING="proxy on CPU 0; wrk and the upstream share CPU 1 (taskset)"
else
  PIN_PROXY=""; PIN_LOAD=""; PIN_UP=""
  PINNING="not pinned: one CPU"
fi

if [ "$INSTALL" = 1 ]; then
  missing=""
  command -v nginx >/dev/null || missing="$missing nginx"
  command -v haproxy >/dev/null || missing="$missing haproxy"
  command -v wrk >/dev/null || missing="$missing wrk"
  if want h2; then command -v h2load >/dev/null || missing="$missing nghttp2-client"; fi
  if [ -n "$missing" ]; then
    log "installing$missing (Debian packages)"
    apt-get update -qq
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >>"$LOG" 2>&1
  fi
fi
for c in nginx haproxy wrk taskset python3; do
  command -v "$c" >/dev/null || { log "missing: $c"; exit 1; }
done
SKIPPED=""
if want h2 && ! command -v h2load >/dev/null; then
  log "missing: h2load (Debian nghttp2-client): the HTTP/2 rows are skipped"
  SKIPPED="h2 (no h2load)"
  ONLY=${ONLY//h2/}
fi

if [ "$BUILD" = 1 ]; then
  log "building (release)"
  (cd "$ROOT" && cargo build --release --locked --bin entitygate --example bench_upstream \
    --example bench_minimal_proxy --example bench_mcp_load) >>"$LOG" 2>&1
fi
# Copies: a rebuild during the run must not change what is measured.
cp "${EG_BIN:-$ROOT/target/release/entitygate}" "$OUT/bin/entitygate"
cp "$ROOT/target/release/examples/bench_upstream" "$OUT/bin/bench_upstream"
if want ceiling; then
  cp "$ROOT/target/release/examples/bench_minimal_proxy" "$OUT/bin/bench_minimal_proxy"
fi
cp "$ROOT/target/release/examples/bench_mcp_load" "$OUT/bin/bench_mcp_load"
MCPLOAD="$OUT/bin/bench_mcp_load"
EG="$OUT/bin/entitygate"
UP="$OUT/bin/bench_upstream"
# The entitygate binaries to run the main rows with: "entitygate-before" (EG_BEFORE) first,
# then "entitygate" (the current one), so each pair runs back to back; --repeat N repeats the
# pair (before, after, before, after, ...).
EG_PAIR=(entitygate)
if [ -n "${EG_BEFORE:-}" ]; then
  cp "$EG_BEFORE" "$OUT/bin/entitygate-before"
  EG_PAIR=(entitygate-before entitygate)
fi
EG_VARIANTS=()
for _ in $(seq 1 "$REPEAT"); do EG_VARIANTS+=("${EG_PAIR[@]}"); done
EG_CUR=$EG  # the binary start_entitygate runs
use_variant() { # use_variant LABEL: start_entitygate runs that binary from now on
  if [ "$1" = entitygate-before ]; then EG_CUR="$OUT/bin/entitygate-before"; else EG_CUR=$EG; fi
}
# HAProxy wants certificate and key in one file.
cat "$CERT" "$CERT_KEY" > "$OUT/tmp/haproxy-server.pem"

for p in $UP_PORT $UP2_PORT $UP_TLS_PORT $EG_PORT $NGINX_PORT $HAPROXY_PORT $MIN_PORT; do port_free "$p"; done
for p in $UP_PORT $UP2_PORT $UP_TLS_PORT $EG_PORT $NGINX_PORT $HAPROXY_PORT; do port_free "$p"; done
if want mcp; then for p in 18004 18085 18086; do port_free "$p"; done; fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
CLK_TCK=$(getconf CLK_TCK)

# Tokens (TEST-ONLY keys) and bodies.
export BENCH_SECRET="$SECRET"
mint() { # mint ALG PREFIX COUNT FILE
  local key=(--secret-env BENCH_SECRET)
  [ "$1" = RS256 ] && key=(--key-file "$ROOT/certs/dev/jwt-rsa.key")
  "$UP" mint --alg "$1" "${key[@]}" --issuer "$ISSUER" --audience "$AUDIENCE" \
    --prefix "$2" --count "$3" --out "$4"
}
log "minting tokens"
mint HS256 alice 1 "$OUT/tok-hs.txt"
mint RS256 alice 1 "$OUT/tok-rs.txt"
mint HS256 warmup 1 "$OUT/tok-warmup.txt"
mint HS256 user "$USERS" "$OUT/tok-users.txt"
if want cold; then mint HS256 cold "$COLD_USERS" "$OUT/tok-cold.txt"; fi
mint HS256 burst 1 "$OUT/tok-burst.txt"

# A typical v3 execute body without a user id (the gateway parses it, removes every spelling
# of a user id and sets the subject's); the "forged" variant names another user, which the
# gateway also logs as a warning.
body_json() { # body_json PAD_BYTES [forged]
  python3 - "$1" "${2:-}" <<'EOF'
import json, sys
pad = int(sys.argv[1])
args = {"owner": "acme", "repo": "app", "title": "Bug: login fails",
        "body": "Steps to reproduce: open the app, click login, nothing happens.",
        "labels": ["bug", "p1"]}
doc = {"version": "20250909_00", "arguments": args}
if sys.argv[2] == "forged":
    doc = {"user_id": "mallory", **doc}
base = len(json.dumps(doc, separators=(",", ":")))
if pad > base:
    args["body"] += "x" * (pad - base)
sys.stdout.write(json.dumps(doc, separators=(",", ":")))
EOF
}
body_json 0 > "$OUT/body-small.json"
body_json 0 forged > "$OUT/body-forged.json"
body_json 1024 > "$OUT/body-1k.json"
body_json 262144 > "$OUT/body-256k.json"

# --- steps: the decision steps of issues 27-29 (issue 32, part 3) ----------------------------
# bench/steps/VARIANT.toml goes where bench/entitygate.toml says @STEPS@: argument constraints,
# approval rules, the tool lock, each either applying to the benchmarked tool or configured for
# other tools only. STEPS_CUR is the variant start_entitygate renders (STEPS, default all).
STEPS_VARIANTS="none constraints-unused constraints approvals-unused approvals toollock-unused toollock all"
STEPS_CUR=${STEPS:-all}
[ -f "$BENCH/steps/$STEPS_CUR.toml" ] || { echo "STEPS=$STEPS_CUR: no bench/steps/$STEPS_CUR.toml" >&2; exit 2; }
steps_settings() { # steps_settings FILE...: the settings lines of snippets (no comments, blanks)
  cat "$@" | grep -v '^[[:space:]]*#' | grep -v '^[[:space:]]*$'
}
# all.toml is the union of the applying variants: it must not drift from them.
if [ "$(steps_settings "$BENCH/steps/all.toml")" != \
     "$(steps_settings "$BENCH/steps/"{constraints,approvals-unused,approvals,toollock}.toml)" ]; then
  echo "bench/steps/all.toml differs from constraints + approvals-unused + approvals + toollock" >&2
  exit 2
fi
steps_insert() { # steps_insert CONF VARIANT: the variant's snippet in place of the @STEPS@ line
  awk -v f="$BENCH/steps/$2.toml" \
    '$0 == "@STEPS@" { while ((getline l < f) > 0) print l; close(f); next } { print }' \
    "$1" > "$1.tmp" && mv "$1.tmp" "$1"
}
# steps_setup: the lock files the variants name, beside the configurations (the tool lock's
# path is relative to its configuration): tools.lock.json written by `entitygate tools lock`
# from bench_upstream's definitions (it must be listening), tools-other.lock.json copied. Also
# one HS256 configuration per variant, entitygate-HS256-steps-VARIANT.toml, for
# `STEPS=VARIANT bench/instructions.sh` (and entitygate-HS256.toml with STEPS_CUR).
steps_setup() {
  cp "$BENCH/steps/tools-other.lock.json" "$OUT/tools-other.lock.json"
  rm -f "$OUT/tools.lock.json"
  local v conf
  for v in $STEPS_VARIANTS; do
    conf="$OUT/entitygate-HS256-steps-$v.toml"
    render "$BENCH/entitygate.toml" "$conf" PORT=$EG_PORT UPSTREAM_PORT=$UP_PORT \
      TOKEN_CACHE=100000 ALG=HS256 KEY_LINE='secret_env = "ENTITYGATE_JWT_SECRET"' \
      WORK="$OUT/tmp" UPSTREAM_SCHEME=http UPSTREAM_CA_LINE="" TLS_SECTION=""
    steps_insert "$conf" "$v"
  done
  cp "$OUT/entitygate-HS256-steps-$STEPS_CUR.toml" "$OUT/entitygate-HS256.toml"
  COMPOSIO_API_KEY=sk_bench_only ENTITYGATE_JWT_SECRET="$SECRET" RUST_LOG=warn \
    "$EG" tools lock --config "$OUT/entitygate-HS256-steps-toollock.toml" --toolkits github \
    >>"$LOG" 2>&1 || { log "entitygate tools lock failed (see $LOG)"; exit 1; }
  log "tool lock: $(grep -c '"sha256"' "$OUT/tools.lock.json") github tools locked"
}

# steps_probe VARIANT: before a variant is measured, calls that only its steps refuse prove that
# they are in force (and that the "-unused" ones do not apply to the benchmarked tool): an issue
# outside acme (a constraint refuses it; an approval rule holds it), a GitHub tool the lock does
# not have (the lock refuses it). A step that is not in force stops the run.
steps_probe() {
  python3 - "$1" "$EG_PORT" "$OUT/tok-hs.txt" <<'PY'
import http.client, json, sys
variant, port, token = sys.argv[1], int(sys.argv[2]), open(sys.argv[3]).read().split()[0]
outside = ("GITHUB_CREATE_AN_ISSUE", {"arguments": {"owner": "evil", "repo": "app", "title": "t"}})
unlocked = ("GITHUB_LIST_COMMITS", {"arguments": {"owner": "acme", "repo": "app"}})
expect = {  # variant: [(call, slug of the refusal, or None: forwarded)]
    "constraints": [(outside, "arguments_not_allowed"), (unlocked, None)],
    "approvals": [(outside, "approval_required"), (unlocked, None)],
    "toollock": [(outside, None), (unlocked, "tool_definition_changed")],
    "all": [(outside, "arguments_not_allowed"), (unlocked, "tool_definition_changed")],
}.get(variant, [(outside, None), (unlocked, None)])
for (tool, body), want in expect:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("POST", "/api/v3.1/tools/execute/" + tool, json.dumps(body),
              {"x-api-key": token, "content-type": "application/json"})
    r = c.getresponse()
    got = json.loads(r.read() or b"{}").get("error") if r.status != 200 else None
    slug = got.get("slug") if isinstance(got, dict) else None
    if r.status != 200 and slug is None:
        slug = "status %d" % r.status
    if slug != want:
        sys.exit("steps %s: %s answered %s, expected %s" % (variant, tool, slug, want or "200"))
PY
}

# --- the processes under test ---------------------------------------------------------------
start_upstream() { # start_upstream PORT [extra args]: sets UP_PID (HTTP/1.1 and h2c)
  local port=$1; shift
  $PIN_UP "$UP" serve --listen "127.0.0.1:$port" "$@" >>"$OUT/upstream-$port.log" 2>&1 &
  UP_PID=$!; PIDS+=("$UP_PID")
  wait_port "$port"
}

render() { # render TEMPLATE OUTFILE key=value...
  local tmpl=$1 out=$2; shift 2
  local s; s=$(cat "$tmpl")
  local kv
  for kv in "$@"; do s=${s//"@${kv%%=*}@"/${kv#*=}}; done
  printf '%s\n' "$s" > "$out"
}

# Each proxy comes in flavours: "" (HTTP/1.1; h2c too for entitygate), h2 (h2c listener,
# nginx and HAProxy need it said) and tls (TLS from the client and to the TLS upstream).
start_entitygate() { # start_entitygate NAME ALG TOKEN_CACHE [UPSTREAM_PORT [tls]]: sets PROXY_PID
  local name=$1 alg=$2 cache=$3 upport=${4:-$UP_PORT} flavour=${5:-} keyline
  if [ "$alg" = HS256 ]; then keyline='secret_env = "ENTITYGATE_JWT_SECRET"'
  else keyline="public_key_file = \"$ROOT/certs/dev/jwt-rsa.pub\""; fi
  local scheme=http caline="" tls=""
  if [ "$flavour" = tls ]; then
    scheme=https
    caline="ca_file = \"$CA\""
    tls=$(printf '[tls]\ncert = "%s"\nkey = "%s"' "$CERT" "$CERT_KEY")
  fi
  rm -f "$OUT/tmp/entitygate-audit.jsonl"
  local conf="$OUT/entitygate-$name.toml"
  [ "$EG_CUR" = "$EG" ] || conf="$OUT/entitygate-$name-before.toml"
  render "$BENCH/entitygate.toml" "$conf" PORT=$EG_PORT \
    UPSTREAM_PORT="$upport" TOKEN_CACHE="$cache" ALG="$alg" KEY_LINE="$keyline" WORK="$OUT/tmp" \
    UPSTREAM_SCHEME="$scheme" UPSTREAM_CA_LINE="$caline" TLS_SECTION="$tls"
  steps_insert "$conf" "$STEPS_CUR"
  # Keys the older binary does not know are marked "# not-before" in the template.
  if [ "$EG_CUR" != "$EG" ]; then sed -i '/^[^#].*# not-before/d' "$conf"; fi
  COMPOSIO_API_KEY=sk_bench_only ENTITYGATE_JWT_SECRET="$SECRET" RUST_LOG=warn \
    $PIN_PROXY "$EG_CUR" serve --config "$conf" >>"$OUT/entitygate.log" 2>&1 &
  PROXY_PID=$!; PIDS+=("$PROXY_PID"); PROXY_PORT=$EG_PORT
  wait_port $EG_PORT
}

start_nginx() { # start_nginx [h2|tls]
  local flavour=${1:-} opts="" server_lines="" proxy_lines="" scheme=http upport=$UP_PORT
  case "$flavour" in
    h2) opts=http2 ;;
    tls)
      opts=ssl; scheme=https; upport=$UP_TLS_PORT
      server_lines=$(printf '        ssl_certificate %s;\n        ssl_certificate_key %s;' "$CERT" "$CERT_KEY")
      proxy_lines=$(printf '            proxy_ssl_verify on;\n            proxy_ssl_trusted_certificate %s;\n            proxy_ssl_name localhost;\n            proxy_ssl_session_reuse on;' "$CA")
      ;;
  esac
  mkdir -p "$OUT/tmp/nginx-tmp"
  render "$BENCH/nginx.conf" "$OUT/nginx${flavour:+-$flavour}.conf" PORT=$NGINX_PORT \
    UPSTREAM_PORT=$upport WORK="$OUT/tmp" LISTEN_OPTS="$opts" SERVER_LINES="$server_lines" \
    PROXY_LINES="$proxy_lines" UPSTREAM_SCHEME=$scheme
  $PIN_PROXY nginx -c "$OUT/nginx${flavour:+-$flavour}.conf" -e "$OUT/tmp/nginx-error.log" \
    >>"$OUT/nginx.log" 2>&1 &
  PROXY_PID=$!; PIDS+=("$PROXY_PID"); PROXY_PORT=$NGINX_PORT
  wait_port $NGINX_PORT
}

start_haproxy() { # start_haproxy ALG [h2|tls]
  local hkey=$SECRET flavour=${2:-} bind="" server="" upport=$UP_PORT
  [ "$1" = RS256 ] && hkey="$ROOT/certs/dev/jwt-rsa.pub"
  case "$flavour" in
    h2) bind="proto h2" ;;
    tls)
      bind="ssl crt $OUT/tmp/haproxy-server.pem"; upport=$UP_TLS_PORT
      server="ssl verify required ca-file $CA verifyhost localhost"
      ;;
  esac
  render "$BENCH/haproxy.cfg" "$OUT/haproxy-$1${flavour:+-$flavour}.cfg" PORT=$HAPROXY_PORT \
    UPSTREAM_PORT=$upport ALG="$1" HAPROXY_KEY="$hkey" BIND_OPTS="$bind" SERVER_OPTS="$server"
  $PIN_PROXY haproxy -db -f "$OUT/haproxy-$1${flavour:+-$flavour}.cfg" >>"$OUT/haproxy.log" 2>&1 &
  PROXY_PID=$!; PIDS+=("$PROXY_PID"); PROXY_PORT=$HAPROXY_PORT
  wait_port $HAPROXY_PORT
}

# The ceiling (group ceiling): no checks, the same server settings and upstream client.
start_minimal() { # start_minimal: sets PROXY_PID
  $PIN_PROXY "$OUT/bin/bench_minimal_proxy" --listen "127.0.0.1:$MIN_PORT" \
    --upstream "http://127.0.0.1:$UP_PORT" >>"$OUT/minimal-hyper.log" 2>&1 &
  PROXY_PID=$!; PIDS+=("$PROXY_PID"); PROXY_PORT=$MIN_PORT
  wait_port $MIN_PORT
}

# --- measurements ---------------------------------------------------------------------------
family() { # family PID: the PID and its children (nginx workers)
  echo "$1"; ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' ' || true
}
cpu_ticks() { # utime + stime of the process family, in clock ticks
  local t=0 p
  for p in $(family "$1"); do
    [ -r "/proc/$p/stat" ] || continue
    t=$(( t + $(awk '{print $14 + $15}' "/proc/$p/stat") ))
  done
  echo "$t"
}
mem_kb() { # mem_kb PID FIELD (VmHWM or VmRSS), summed over the family
  local t=0 p v
  for p in $(family "$1"); do
    v=$(awk -v f="$2:" '$1 == f {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    t=$(( t + ${v:-0} ))
  done
  echo "$t"
}
up_stat() { # up_stat PORT FIELD: a counter of bench_upstream (over TLS on UP_TLS_PORT)
  python3 - "$1" "$2" "$UP_TLS_PORT" "$CA" <<'EOF'
import json, ssl, sys, urllib.request
port, field, tls_port, ca = sys.argv[1:5]
if port == tls_port:
    ctx = ssl.create_default_context(cafile=ca)
    url = "https://127.0.0.1:%s/__stats" % port
else:
    ctx, url = None, "http://127.0.0.1:%s/__stats" % port
print(json.load(urllib.request.urlopen(url, context=ctx))[field])
EOF
}

SCHEME=http    # what wrk speaks to the proxy: http, or https for the TLS rows
STATS_PORT=$UP_PORT  # the upstream whose counters the rows read
wrk_run() { # wrk_run PORT TOKENS BODY SECS CONNS [DELAY_MS] [ONCE]: prints the result line
  local tmp="$OUT/tmp/wrk-out.jsonl"
  rm -f "$tmp"
  BENCH_PATH="$TOOL_PATH" BENCH_TOKENS="$2" BENCH_BODY="$3" BENCH_DELAY_MS="${6:-0}" \
    BENCH_ONCE="${7:-0}" BENCH_OUT="$tmp" \
    $PIN_LOAD wrk -t1 -c"$5" -d"${4}s" --timeout 10s -s "$BENCH/wrk.lua" \
    "$SCHEME://127.0.0.1:$1" >>"$LOG" 2>&1
  cat "$tmp"
}

record() { # record JSON: one line of results
  echo "$1" >> "$RESULTS"
}

# measure CASE TOKENS BODY [nowarm [EXTRA_JSON]]: warm-up, saturation (rps, CPU), fixed rate
# (latency), RSS. EXTRA_JSON (e.g. ,"group":"tls") is appended to the record.
measure() {
  local case=$1 tokens=$2 body=$3 warm=${4:-warm} extra=${5:-}
  if [ "$warm" = warm ]; then
    wrk_run "$PROXY_PORT" "$tokens" "$body" "$WARM_SECS" "$CONNS" >/dev/null
  fi
  local lookups0=0; lookups0=$(up_stat "$STATS_PORT" status_lookups)
  local h2_0; h2_0=$(up_stat "$STATS_PORT" http2)
  local c0 c1 sat rate
  c0=$(cpu_ticks "$PROXY_PID")
  sat=$(wrk_run "$PROXY_PORT" "$tokens" "$body" "$SAT_SECS" "$CONNS")
  c1=$(cpu_ticks "$PROXY_PID")
  local lookups1; lookups1=$(up_stat "$STATS_PORT" status_lookups)
  rate=$(wrk_run "$PROXY_PORT" "$tokens" "$body" "$RATE_SECS" "$RATE_CONNS" "$DELAY_MS")
  local hwm; hwm=$(mem_kb "$PROXY_PID" VmHWM)
  local h2_1; h2_1=$(up_stat "$STATS_PORT" http2)
  record "{\"case\":\"$case\",\"sat\":$sat,\"rate\":$rate,\"cpu_ticks\":$((c1 - c0)),\"clk_tck\":$CLK_TCK,\"hwm_kb\":$hwm,\"sat_secs\":$SAT_SECS,\"status_lookups\":$((lookups1 - lookups0)),\"upstream_http2_requests\":$((h2_1 - h2_0))$extra}"
  log "$case: $(echo "$sat" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.0f req/s, errors %d" % (d["rps"], d["err_status"]+d["err_connect"]+d["err_read"]+d["err_timeout"]))')"
}

# HTTP/2 with h2load: prints one JSON line from h2load's summary (it reports min/max/mean/sd
# of the request time, no percentiles).
h2_run() { # h2_run PORT TOKEN_FILE BODY SECS
  local tok; tok=$(head -n 1 "$2")
  $PIN_LOAD h2load -t1 -c "$CONNS" -m "$H2_STREAMS" -D "$4" -d "$3" \
    -H "authorization: Bearer $tok" -H "content-type: application/json" \
    "http://127.0.0.1:$1$TOOL_PATH" > "$OUT/tmp/h2load-out.txt" 2>>"$LOG"
  cat "$OUT/tmp/h2load-out.txt" >> "$LOG"
  python3 - "$OUT/tmp/h2load-out.txt" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
def us(v):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", v)
    return round(float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)], 1)
out = {}
m = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", text)
out["duration_us"] = round(float(m.group(1)) * 1e6)
out["rps"] = float(m.group(2))
m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
              r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
for k, v in zip(["total", "started", "done", "requests", "failed", "errored", "timeout"],
                m.groups()):
    out[k] = int(v)
m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
out["status"] = dict(zip(["2xx", "3xx", "4xx", "5xx"], map(int, m.groups())))
m = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", text)
for k, v in zip(["min_us", "max_us", "mean_us", "sd_us"], m.groups()):
    out[k] = us(v)
print(json.dumps(out))
PY
}

# h2_case CASE: the small execution over HTTP/2 (h2c): warm-up, then saturation (rps, CPU)
h2_case() {
  h2_run "$PROXY_PORT" "$OUT/tok-hs.txt" "$OUT/body-small.json" "$WARM_SECS" >/dev/null
  local c0 c1 h2 up0 up1
  up0=$(up_stat $UP_PORT http2)
  c0=$(cpu_ticks "$PROXY_PID")
  h2=$(h2_run "$PROXY_PORT" "$OUT/tok-hs.txt" "$OUT/body-small.json" "$SAT_SECS")
  c1=$(cpu_ticks "$PROXY_PID")
  up1=$(up_stat $UP_PORT http2)
  record "{\"case\":\"$1\",\"group\":\"h2\",\"h2\":$h2,\"conns\":$CONNS,\"streams\":$H2_STREAMS,\"cpu_ticks\":$((c1 - c0)),\"clk_tck\":$CLK_TCK,\"hwm_kb\":$(mem_kb "$PROXY_PID" VmHWM),\"sat_secs\":$SAT_SECS,\"upstream_http2_requests\":$((up1 - up0))}"
  log "$1 (h2c): $(echo "$h2" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.0f req/s, %d of %d succeeded" % (d["rps"], d["requests"], d["total"]))')"
}

# --- 1-4: the same small tool execution through each ----------------------------------------
log "machine: $NCPU CPUs; $PINNING; load: $(cut -d' ' -f1-3 /proc/loadavg); groups: $ONLY"
start_upstream $UP_PORT
MAIN_UP_PID=$UP_PID
steps_setup

# 1. direct: the floor
if want direct; then
  PROXY_PID=$MAIN_UP_PID; PROXY_PORT=$UP_PORT
  measure direct "$OUT/tok-hs.txt" "$OUT/body-small.json"
fi

# 2. nginx, HAProxy
if want nginx; then
  start_nginx
  measure nginx "$OUT/tok-hs.txt" "$OUT/body-small.json"
  stop "$PROXY_PID"
fi
if want haproxy; then
  for alg in HS256 RS256; do
    start_haproxy $alg
    tok="$OUT/tok-hs.txt"; [ $alg = RS256 ] && tok="$OUT/tok-rs.txt"
    measure "haproxy-$alg" "$tok" "$OUT/body-small.json"
    stop "$PROXY_PID"
  done
  start_haproxy HS256
  measure "haproxy-HS256-${USERS}users" "$OUT/tok-users.txt" "$OUT/body-small.json"
  stop "$PROXY_PID"
fi

# 3. entitygate, every check on, warm caches; with the token cache off, every request pays
# the signature check as HAProxy does. With EG_BEFORE, the older binary runs each row first.
if want entitygate; then
  for alg in HS256 RS256; do
    tok="$OUT/tok-hs.txt"; [ $alg = RS256 ] && tok="$OUT/tok-rs.txt"
    for v in "${EG_VARIANTS[@]}"; do
      use_variant "$v"
      start_entitygate "$alg" "$alg" 100000
      measure "$v-$alg" "$tok" "$OUT/body-small.json"
      if [ $alg = HS256 ] && [ "$v" = entitygate ]; then
        measure "$v-$alg-forged-user-id" "$tok" "$OUT/body-forged.json"
      fi
      stop "$PROXY_PID"
    done
    for v in "${EG_VARIANTS[@]}"; do
      use_variant "$v"
      start_entitygate "$alg-nocache" "$alg" 0
      measure "$v-$alg-no-token-cache" "$tok" "$OUT/body-small.json"
      stop "$PROXY_PID"
    done
  done
  use_variant entitygate
fi

# 4. cold connection cache: every request is a new user (a new token, one status lookup);
# a fresh gateway for the saturation run and another for the rate run.
cold_case() { # cold_case LABEL: with the binary use_variant chose
  local l0 l1 l2 l3 c0 c1 sat rate hwm
  start_entitygate cold HS256 100000
  wrk_run $EG_PORT "$OUT/tok-warmup.txt" "$OUT/body-small.json" 1 1 >/dev/null  # tool -> toolkit
  l0=$(up_stat $UP_PORT status_lookups)
  c0=$(cpu_ticks "$PROXY_PID")
  sat=$(wrk_run $EG_PORT "$OUT/tok-cold.txt" "$OUT/body-small.json" "$SAT_SECS" "$CONNS" 0 1)
  c1=$(cpu_ticks "$PROXY_PID")
  l1=$(up_stat $UP_PORT status_lookups)
  stop "$PROXY_PID"
  start_entitygate cold HS256 100000
  wrk_run $EG_PORT "$OUT/tok-warmup.txt" "$OUT/body-small.json" 1 1 >/dev/null
  l2=$(up_stat $UP_PORT status_lookups)
  rate=$(wrk_run $EG_PORT "$OUT/tok-cold.txt" "$OUT/body-small.json" "$RATE_SECS" "$RATE_CONNS" "$DELAY_MS" 1)
  l3=$(up_stat $UP_PORT status_lookups)
  hwm=$(mem_kb "$PROXY_PID" VmHWM)
  stop "$PROXY_PID"
  record "{\"case\":\"$1\",\"sat\":$sat,\"rate\":$rate,\"cpu_ticks\":$((c1 - c0)),\"clk_tck\":$CLK_TCK,\"hwm_kb\":$hwm,\"sat_secs\":$SAT_SECS,\"status_lookups\":$((l1 - l0)),\"rate_status_lookups\":$((l3 - l2))}"
  log "$1: $((l1 - l0)) + $((l3 - l2)) status lookups"
}
if want cold; then
  for v in "${EG_VARIANTS[@]}"; do
    use_variant "$v"
    cold_case "$v-HS256-cold"
  done
  use_variant entitygate
fi

# 10,000 distinct users, warm: one pass over them first (one lookup each), then measure.
if want entitygate; then
  start_entitygate users HS256 100000
  l0=$(up_stat $UP_PORT status_lookups)
  wrk_run $EG_PORT "$OUT/tok-users.txt" "$OUT/body-small.json" "$SAT_SECS" "$CONNS" 0 1 >/dev/null
  log "warm-up pass over $USERS users: $(( $(up_stat $UP_PORT status_lookups) - l0 )) status lookups"
  measure "entitygate-HS256-${USERS}users" "$OUT/tok-users.txt" "$OUT/body-small.json" nowarm
  stop "$PROXY_PID"
fi

# --- bodies: 1 KiB and 256 KiB ----------------------------------------------------------------
body_case() { # body_case NAME TOKENS
  local size c0 c1 sat
  for size in 1k 256k; do
    wrk_run "$PROXY_PORT" "$2" "$OUT/body-$size.json" "$WARM_SECS" "$CONNS" >/dev/null
    c0=$(cpu_ticks "$PROXY_PID")
    sat=$(wrk_run "$PROXY_PORT" "$2" "$OUT/body-$size.json" "$BODY_SECS" "$CONNS")
    c1=$(cpu_ticks "$PROXY_PID")
    record "{\"case\":\"$1\",\"body\":\"$size\",\"body_bytes\":$(stat -c %s "$OUT/body-$size.json"),\"sat\":$sat,\"cpu_ticks\":$((c1 - c0)),\"clk_tck\":$CLK_TCK,\"hwm_kb\":$(mem_kb "$PROXY_PID" VmHWM)}"
  done
  log "bodies through $1 done"
}
if want bodies; then
  PROXY_PID=$MAIN_UP_PID; PROXY_PORT=$UP_PORT
  body_case direct "$OUT/tok-hs.txt"
  start_nginx; body_case nginx "$OUT/tok-hs.txt"; stop "$PROXY_PID"
  start_haproxy HS256; body_case haproxy-HS256 "$OUT/tok-hs.txt"; stop "$PROXY_PID"
  for v in "${EG_VARIANTS[@]}"; do
    use_variant "$v"
    start_entitygate body HS256 100000; body_case "$v-HS256" "$OUT/tok-hs.txt"; stop "$PROXY_PID"
  done
  use_variant entitygate
fi

# --- idle keep-alive connections --------------------------------------------------------------
idle_case() { # idle_case NAME COUNT [--h2]
  local ready="$OUT/tmp/idle-ready.json" rss0 rss hwm report cpid
  rm -f "$ready"
  rss0=$(mem_kb "$PROXY_PID" VmRSS)
  $PIN_LOAD python3 "$BENCH/conns.py" idle --port "$PROXY_PORT" --count "$2" \
    --token-file "$OUT/tok-hs.txt" --body-file "$OUT/body-small.json" --hold 3 \
    --ready-file "$ready" ${3:+"$3"} > "$OUT/tmp/idle-report.json" 2>>"$LOG" &
  cpid=$!; PIDS+=("$cpid")
  for _ in $(seq 1 600); do [ -s "$ready" ] && break; sleep 0.1; done
  sleep 1
  rss=$(mem_kb "$PROXY_PID" VmRSS)
  hwm=$(mem_kb "$PROXY_PID" VmHWM)
  wait "$cpid" || true
  forget "$cpid"
  report=$(cat "$OUT/tmp/idle-report.json" 2>/dev/null || echo '{}')
  [ -n "$report" ] || report='{}'
  record "{\"case\":\"$1\",\"idle\":$2,\"rss_before_kb\":$rss0,\"rss_idle_kb\":$rss,\"hwm_kb\":$hwm,\"client\":$report}"
  log "idle $2 connections to $1: RSS $rss0 kB -> $rss kB; $report"
}
if want idle; then
  for v in "${EG_VARIANTS[@]}"; do
    use_variant "$v"
    start_entitygate idle HS256 100000; idle_case "$v-HS256" "$IDLE"; stop "$PROXY_PID"
  done
  use_variant entitygate
  start_nginx; idle_case nginx "$IDLE"; stop "$PROXY_PID"
  # HAProxy's ceiling here is maxconn 9990 (see bench/haproxy.cfg).
  HAP_IDLE=$IDLE; [ "$HAP_IDLE" -gt 9900 ] && HAP_IDLE=9900
  start_haproxy HS256; idle_case haproxy-HS256 "$HAP_IDLE"; stop "$PROXY_PID"
  # The same over HTTP/2 (h2c, prior knowledge): one request per connection, then idle.
  for v in "${EG_VARIANTS[@]}"; do
    use_variant "$v"
    start_entitygate idle HS256 100000; idle_case "$v-HS256-h2" "$IDLE" --h2; stop "$PROXY_PID"
  done
  use_variant entitygate
  start_nginx h2; idle_case nginx-h2 "$IDLE" --h2; stop "$PROXY_PID"
  start_haproxy HS256 h2; idle_case haproxy-HS256-h2 "$HAP_IDLE" --h2; stop "$PROXY_PID"
fi

# --- a burst for one cold user: one status lookup ---------------------------------------------
# A second upstream that takes 50 ms per status lookup, as a real one might, so the burst
# really arrives while the lookup is in flight.
if want burst; then
  start_upstream $UP2_PORT --lookup-delay-ms 50
  UP2_PID=$UP_PID
  start_entitygate burst HS256 100000 $UP2_PORT
  burst=$($PIN_LOAD python3 "$BENCH/conns.py" burst --port $EG_PORT --count "$BURST" \
    --token-file "$OUT/tok-burst.txt" --body-file "$OUT/body-small.json" 2>>"$LOG" | tail -1) || true
  [ -n "$burst" ] || burst='{}'
  record "{\"case\":\"burst\",\"burst\":$BURST,\"client\":${burst:-{\}},\"status_lookups\":$(up_stat $UP2_PORT status_lookups),\"tool_lookups\":$(up_stat $UP2_PORT tool_lookups),\"executes\":$(up_stat $UP2_PORT executes)}"
  log "burst of $BURST for one cold user: $(up_stat $UP2_PORT status_lookups) status lookup(s); $burst"
  stop "$PROXY_PID"
  stop "$UP2_PID"
fi

# --- HTTP/2 (h2c, prior knowledge) at saturation: h2load ----------------------------------------
# The same small execution, one token, CONNS connections with H2_STREAMS streams each. The
# upstream serves both HTTP/1.1 and h2c; how many requests reached it over HTTP/2 is recorded
# (upstream_http2_requests): nginx and HAProxy speak HTTP/1.1 to it, as does entitygate's
# client over plain TCP today.
if want h2; then
  PROXY_PID=$MAIN_UP_PID; PROXY_PORT=$UP_PORT
  h2_case direct-h2
  start_nginx h2; h2_case nginx-h2; stop "$PROXY_PID"
  start_haproxy HS256 h2; h2_case haproxy-HS256-h2; stop "$PROXY_PID"
  for v in "${EG_VARIANTS[@]}"; do
    use_variant "$v"
    start_entitygate h2 HS256 100000; h2_case "$v-HS256-h2"; stop "$PROXY_PID"
  done
  use_variant entitygate
fi

# --- TLS on both sides: client -> proxy and proxy -> upstream ---------------------------------
# A TLS upstream (TEST-ONLY certs/dev, ALPN $UP_ALPN); wrk speaks HTTPS/1.1 (no ALPN) to the
# proxy, each proxy verifies the upstream against certs/dev/ca.crt and keeps connections.
if want tls; then
  start_upstream $UP_TLS_PORT --tls-cert "$CERT" --tls-key "$CERT_KEY" --alpn "$UP_ALPN"
  UP_TLS_PID=$UP_PID
  SCHEME=https; STATS_PORT=$UP_TLS_PORT
  PROXY_PID=$UP_TLS_PID; PROXY_PORT=$UP_TLS_PORT
  measure direct-tls "$OUT/tok-hs.txt" "$OUT/body-small.json" warm ',"group":"tls"'
  start_nginx tls
  measure nginx-tls "$OUT/tok-hs.txt" "$OUT/body-small.json" warm ',"group":"tls"'
  stop "$PROXY_PID"
  start_haproxy HS256 tls
  measure haproxy-HS256-tls "$OUT/tok-hs.txt" "$OUT/body-small.json" warm ',"group":"tls"'
  stop "$PROXY_PID"
  for v in "${EG_VARIANTS[@]}"; do
    use_variant "$v"
    start_entitygate tls HS256 100000 $UP_TLS_PORT tls
    measure "$v-HS256-tls" "$OUT/tok-hs.txt" "$OUT/body-small.json" warm ',"group":"tls"'
    stop "$PROXY_PID"
  done
  use_variant entitygate
  stop "$UP_TLS_PID"
  SCHEME=http; STATS_PORT=$UP_PORT
fi

# --- ceiling: the minimal hyper proxy (examples/bench_minimal_proxy.rs) ----------------------
# entitygate's own server settings and upstream client with no check at all: the same rows as
# entitygate's (saturation + fixed rate, idle HTTP/1.1 and h2c connections, h2load), so the
# report can divide entitygate by the stack it is built on.
ceiling_rows() {
  start_minimal
  measure minimal-hyper "$OUT/tok-hs.txt" "$OUT/body-small.json"
  stop "$PROXY_PID"
  start_minimal; idle_case minimal-hyper "$IDLE"; stop "$PROXY_PID"
  start_minimal; idle_case minimal-hyper-h2 "$IDLE" --h2; stop "$PROXY_PID"
  if command -v h2load >/dev/null; then
    start_minimal; h2_case minimal-hyper-h2; stop "$PROXY_PID"
  fi
}
if want ceiling; then
  ceiling_rows
fi

# --- steps: each decision step configured, A/B against none -------------------------------------
# The warm HS256 rows (saturation, then the fixed rate) once per bench/steps variant, back to
# back with the current binary; --repeat N runs N rounds of all variants in turn, so slow drift
# of the machine spreads over every variant alike. Labelled entitygate-HS256-steps-VARIANT;
# report.py sets each against "none" (req/s ratio, CPU/request ratio, p99 added).
if want steps; then
  use_variant entitygate
  for _ in $(seq 1 "$REPEAT"); do
    for v in $STEPS_VARIANTS; do
      STEPS_CUR=$v
      start_entitygate "HS256-steps-run" HS256 100000
      steps_probe "$v" || { log "steps $v: a step is not in force (above); stopping"; exit 1; }
      measure "entitygate-HS256-steps-$v" "$OUT/tok-hs.txt" "$OUT/body-small.json" warm \
        ",\"group\":\"steps\",\"steps\":\"$v\""
      stop "$PROXY_PID"
    done
  done
  STEPS_CUR=${STEPS:-all}
fi

# --- MCP: tools/call through the MCP gateways (issue 32) --------------------------------------
# The same MCP stand-in (bench_upstream: JSON answers on $UP_PORT, SSE answers on
# $MCP_SSE_PORT) and the same load generator (examples/bench_mcp_load.rs) for every target:
# the upstream directly, entitygate (front door /mcp and /v3/mcp/{id}; RS256, a deny-by-default
# tool policy, the connection gate warm, audit to a file: bench/entitygate-mcp.toml),
# agentgateway (bench/peers/agentgateway.sh, its JWT authentication and an MCP authorization
# rule) and ContextForge (bench/peers/contextforge.sh). Each target is driven as it recommends:
# the upstream and entitygate with stateless 2026-07-28 POSTs (no initialize), agentgateway and
# ContextForge with initialize + notifications/initialized per connection first (and the
# Mcp-Session-Id they give). Per target and answer mode: saturation (calls/s, CPU), a fixed
# rate (latency); on the JSON upstream also the cost of a new session (saturation, and a
# fixed rate for its latency), memory per held session and per idle GET event stream.
# A peer whose script is missing or fails gets a "not measured" row with the reason.
MCP_SSE_PORT=18004; AGW_PORT=18085; CF_PORT=18086
if [ "$MODE" = full ]; then
  MCP_SAT_SECS=10; MCP_RATE_SECS=10; MCP_WARM_SECS=2; MCP_CONNS=50; MCP_RATE=3000
  MCP_RATE_CONNS=50; MCP_HOLD=1000; MCP_SESSION_RATE=200
else
  MCP_SAT_SECS=1; MCP_RATE_SECS=1; MCP_WARM_SECS=1; MCP_CONNS=8; MCP_RATE=300
  MCP_RATE_CONNS=8; MCP_HOLD=50; MCP_SESSION_RATE=50
fi
MCP_TOOL=GITHUB_GET_THE_AUTHENTICATED_USER

mcp_load() { # mcp_load ARGS...: one bench_mcp_load run on the load CPU; its JSON line
  local line
  line=$($PIN_LOAD "$MCPLOAD" "$@" 2>>"$LOG" | tail -1) || true
  [ -n "$line" ] || line='{"calls":0,"errors":-1,"failed":"see run.log"}'
  echo "$line"
}

# mcp_calls CASE TARGET ANSWER PID ARGS...: warm-up, saturation (calls/s, CPU of PID's family),
# the fixed rate (latency from the scheduled time), peak RSS. ARGS: url, headers, --session.
mcp_calls() {
  local case=$1 target=$2 answer=$3 pid=$4; shift 4
  local c0 c1 sat rate calls0 calls1
  mcp_load "$@" --connections "$MCP_CONNS" --duration "$MCP_WARM_SECS" >/dev/null
  calls0=$(up_stat "$MCP_STATS_PORT" mcp_calls)
  c0=$(cpu_ticks "$pid")
  sat=$(mcp_load "$@" --connections "$MCP_CONNS" --duration "$MCP_SAT_SECS")
  c1=$(cpu_ticks "$pid")
  calls1=$(up_stat "$MCP_STATS_PORT" mcp_calls)
  rate=$(mcp_load "$@" --connections "$MCP_RATE_CONNS" --rate "$MCP_RATE" --warmup 1 \
    --duration "$MCP_RATE_SECS")
  # A target that cannot keep the rate has no latency at it; so that it still has one, the
  # same open-loop run at half the calls/s it reached at saturation (a rate it can keep).
  local own_rate own=null
  own_rate=$(python3 -c 'import json,sys; s=json.loads(sys.argv[1]); r=json.loads(sys.argv[2]); print(int(s.get("rps", 0) / 2) if r.get("missed", 0) > 0.01 * max(r.get("due", 1), 1) else 0)' "$sat" "$rate" 2>/dev/null || echo 0)
  if [ "$own_rate" -ge 1 ]; then
    # No more connections than calls per second: a connection left idle for seconds is closed
    # by servers with a short keep-alive (uvicorn's is 5 s), which would count as errors.
    local own_conns=$(( own_rate < MCP_RATE_CONNS ? own_rate : MCP_RATE_CONNS ))
    own=$(mcp_load "$@" --connections "$own_conns" --rate "$own_rate" --warmup 1 \
      --duration "$MCP_RATE_SECS")
  fi
  record "{\"case\":\"$case\",\"group\":\"mcp\",\"target\":\"$target\",\"answer\":\"$answer\",\"mcp_sat\":$sat,\"mcp_rate\":$rate,\"mcp_rate_own\":$own,\"cpu_ticks\":$((c1 - c0)),\"clk_tck\":$CLK_TCK,\"hwm_kb\":$(mem_kb "$pid" VmHWM),\"sat_secs\":$MCP_SAT_SECS,\"upstream_calls\":$((calls1 - calls0))}"
  log "$case: $(echo "$sat" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.0f calls/s, errors %d" % (d.get("rps", 0), d.get("errors", -1)))'); at $MCP_RATE/s: $(echo "$rate" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("p50 %s ms, p99 %s ms" % (d.get("p50_ms"), d.get("p99_ms")))')"
}

# mcp_sessions CASE TARGET PID ARGS...: new sessions back to back (sessions/s, CPU), then at a
# fixed rate (the latency of one new session: initialize + notifications/initialized).
mcp_sessions() {
  local case=$1 target=$2 pid=$3; shift 3
  local c0 c1 sat rate
  c0=$(cpu_ticks "$pid")
  sat=$(mcp_load "$@" --mode sessions --connections "$MCP_CONNS" --duration "$MCP_SAT_SECS")
  c1=$(cpu_ticks "$pid")
  rate=$(mcp_load "$@" --mode sessions --connections "$MCP_RATE_CONNS" \
    --rate "$MCP_SESSION_RATE" --warmup 1 --duration "$MCP_RATE_SECS")
  record "{\"case\":\"$case\",\"group\":\"mcp-sessions\",\"target\":\"$target\",\"mcp_sat\":$sat,\"mcp_rate\":$rate,\"cpu_ticks\":$((c1 - c0)),\"clk_tck\":$CLK_TCK}"
  log "$case new sessions: $(echo "$sat" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.0f sessions/s, errors %d" % (d.get("rps", 0), d.get("errors", -1)))')"
}

# mcp_hold CASE TARGET PID hold-sessions|hold-streams ARGS...: opens MCP_HOLD sessions (or
# GET event streams), reads PID's RSS with them open, then closes the generator's stdin.
mcp_hold() {
  local case=$1 target=$2 pid=$3 what=$4; shift 4
  local fifo="$OUT/tmp/mcp-hold.fifo" out="$OUT/tmp/mcp-hold.json" rss0 rss1 hp report
  rm -f "$fifo" "$out"; mkfifo "$fifo"
  exec 7<>"$fifo"   # our end: closing it is the generator's end of input
  rss0=$(mem_kb "$pid" VmRSS)
  $PIN_LOAD "$MCPLOAD" "$@" --mode "$what" --count "$MCP_HOLD" --connections 10 \
    --duration 600 <"$fifo" >"$out" 2>>"$LOG" 7>&- &
  hp=$!; PIDS+=("$hp")
  for _ in $(seq 1 6000); do [ -s "$out" ] && break; kill -0 "$hp" 2>/dev/null || break; sleep 0.1; done
  sleep 1
  rss1=$(mem_kb "$pid" VmRSS)
  exec 7>&-
  wait "$hp" 2>/dev/null || true
  forget "$hp"
  report=$(head -1 "$out" 2>/dev/null || true)
  [ -n "$report" ] || report='{"opened":0}'
  record "{\"case\":\"$case\",\"group\":\"mcp-hold\",\"target\":\"$target\",\"hold\":\"${what#hold-}\",\"count\":$MCP_HOLD,\"rss_before_kb\":$rss0,\"rss_held_kb\":$rss1,\"client\":$report}"
  log "$case $what: RSS $rss0 kB -> $rss1 kB; $report"
}

mcp_not_measured() { # mcp_not_measured TARGET REASON
  local reason; reason=$(printf '%s' "$2" | tr -d '\n' | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()[:300]))')
  record "{\"case\":\"$1\",\"group\":\"mcp\",\"target\":\"$1\",\"not_measured\":$reason}"
  log "$1: not measured: $2"
}

start_entitygate_mcp() { # start_entitygate_mcp UPSTREAM_PORT: sets PROXY_PID
  rm -f "$OUT/tmp/entitygate-mcp-audit.jsonl"
  render "$BENCH/entitygate-mcp.toml" "$OUT/entitygate-mcp-$1.toml" PORT=$EG_PORT \
    UPSTREAM_PORT="$1" JWT_PUB="$ROOT/certs/dev/jwt-rsa.pub" WORK="$OUT/tmp"
  # The decision steps as in every entitygate row (STEPS, default all; the tool lock's
  # tools.lock.json is the one steps_setup wrote beside the configurations).
  steps_insert "$OUT/entitygate-mcp-$1.toml" "$STEPS_CUR"
  COMPOSIO_API_KEY=sk_bench_only RUST_LOG=warn \
    $PIN_PROXY "$EG" serve --config "$OUT/entitygate-mcp-$1.toml" >>"$OUT/entitygate.log" 2>&1 &
  PROXY_PID=$!; PIDS+=("$PROXY_PID")
  if ! wait_port $EG_PORT; then
    MCP_WHY="entitygate did not start: $(grep -v '^[[:space:]]*$' "$OUT/entitygate.log" | tail -1)"
    stop "$PROXY_PID"; return 1
  fi
}

mcp_jwks() { # mcp_jwks FILE: the JWKS of certs/dev/jwt-rsa.pub (kid "bench") for the peers
  python3 - "$ROOT/certs/dev/jwt-rsa.pub" "$1" <<'PY'
import base64, json, subprocess, sys
text = subprocess.run(["openssl", "rsa", "-pubin", "-in", sys.argv[1], "-noout", "-text"],
                      check=True, capture_output=True, text=True).stdout
hexmod = subprocess.run(["openssl", "rsa", "-pubin", "-in", sys.argv[1], "-noout", "-modulus"],
                        check=True, capture_output=True, text=True).stdout.split("=", 1)[1].strip()
exp = int(text.split("Exponent:")[1].split()[0])
b64 = lambda n: base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()
key = {"kty": "RSA", "kid": "bench", "use": "sig", "alg": "RS256", "n": b64(int(hexmod, 16)), "e": b64(exp)}
json.dump({"keys": [key]}, open(sys.argv[2], "w"))
PY
}

# One target. mcp_target NAME STARTER [ANSWERS [SESSION_ROWS]]: STARTER ANSWER UPSTREAM_PORT
# starts it and sets PROXY_PID plus MCP_ARGS (the generator's url/headers/--session/--tool),
# or returns non-zero with the reason in MCP_WHY; ANSWERS (default "json sse") the answer
# modes; SESSION_ROWS (default yes) whether the new-session and memory rows are measured (on
# the first answer mode, in the first round).
mcp_target() {
  local name=$1 starter=$2 answers=${3:-json sse} rows=${4:-yes} answer port first=1
  case "$MCP_SKIP" in *" $name "*) return 0 ;; esac
  for answer in $answers; do
    port=$UP_PORT; [ "$answer" = sse ] && port=$MCP_SSE_PORT
    MCP_STATS_PORT=$port
    MCP_WHY=""
    if ! $starter "$answer" "$port"; then
      mcp_not_measured "$name" "${MCP_WHY:-could not start}"
      MCP_SKIP="$MCP_SKIP$name "
      return 0
    fi
    mcp_calls "$name-$answer" "$name" "$answer" "$PROXY_PID" "${MCP_ARGS[@]}"
    if [ "$first" = 1 ] && [ "$MCP_ROUND" = 1 ] && [ "$rows" = yes ]; then
      mcp_sessions "$name" "$name" "$PROXY_PID" "${MCP_ARGS[@]}"
      mcp_hold "$name" "$name" "$PROXY_PID" hold-sessions "${MCP_ARGS[@]}"
      mcp_hold "$name" "$name" "$PROXY_PID" hold-streams "${MCP_ARGS[@]}"
    fi
    first=0
    case "$name" in
      direct) ;;
      # Master and workers: its own stop (TERM to the process group, given time to end).
      contextforge*) "$BENCH/peers/contextforge.sh" stop "$PROXY_PID" >>"$LOG" 2>&1 || true
        forget "$PROXY_PID" ;;
      *) stop "$PROXY_PID" ;;
    esac
  done
}

mcp_direct() { # the upstream itself (stateless, the project key as Composio wants it)
  PROXY_PID=$MAIN_UP_PID; [ "$1" = sse ] && PROXY_PID=$MCP_SSE_PID
  MCP_ARGS=(--url "http://127.0.0.1:$2/v3/mcp/bench?user_id=alice" --header "x-api-key: sk_bench_only" --tool "$MCP_TOOL")
}
mcp_eg_front_door() {
  start_entitygate_mcp "$2" || return 1
  MCP_ARGS=(--url "http://127.0.0.1:$EG_PORT/mcp" --header "Authorization: Bearer $MCP_TOKEN" --tool "$MCP_TOOL")
}
mcp_eg_v3() {
  start_entitygate_mcp "$2" || return 1
  MCP_ARGS=(--url "http://127.0.0.1:$EG_PORT/v3/mcp/bench" --header "Authorization: Bearer $MCP_TOKEN" --tool "$MCP_TOOL")
}
mcp_agentgateway() { # bench/peers/agentgateway.sh build prints the binary last (exit 3: cannot)
  local script="$BENCH/peers/agentgateway.sh" tmpl="$BENCH/peers/agentgateway.yaml" bin
  [ -x "$script" ] || { MCP_WHY="bench/peers/agentgateway.sh is missing"; return 1; }
  [ -f "$tmpl" ] || { MCP_WHY="bench/peers/agentgateway.yaml is missing"; return 1; }
  if [ -z "${AGW_BIN:-}" ]; then
    if ! bin=$("$script" build 2>"$OUT/tmp/agw-build.err" | tail -1) || [ ! -x "$bin" ]; then
      MCP_WHY="agentgateway.sh build: $(tail -1 "$OUT/tmp/agw-build.err")"; return 1
    fi
    AGW_BIN=$bin
  fi
  if [ ! -s "$OUT/tmp/jwks.json" ]; then
    if [ -f "$BENCH/peers/jwks.py" ]; then
      python3 "$BENCH/peers/jwks.py" "$ROOT/certs/dev/jwt-rsa.pub" "$OUT/tmp/jwks.json" bench
    else
      mcp_jwks "$OUT/tmp/jwks.json"
    fi
  fi
  render "$tmpl" "$OUT/agentgateway-$1.yaml" PORT=$AGW_PORT \
    UPSTREAM_URL="http://127.0.0.1:$2/mcp" JWKS_FILE="$OUT/tmp/jwks.json"
  $PIN_PROXY "$AGW_BIN" -f "$OUT/agentgateway-$1.yaml" >>"$OUT/agentgateway.log" 2>&1 &
  PROXY_PID=$!; PIDS+=("$PROXY_PID")
  if ! wait_port $AGW_PORT; then
    MCP_WHY="agentgateway did not listen on $AGW_PORT: $(tail -1 "$OUT/agentgateway.log")"
    stop "$PROXY_PID"; return 1
  fi
  MCP_ARGS=(--url "http://127.0.0.1:$AGW_PORT${AGW_MCP_PATH:-/mcp}" --header "Authorization: Bearer $MCP_TOKEN" --tool "$MCP_TOOL" --session)
}
# contextforge.sh start PORT UPSTREAM_URL OUTDIR prints KEY=VALUE lines (PID, URL, TOOL,
# TOKEN_FILE: its token has a jti and names a user of its database, alice@idp.bench).
# CF_JSON_RESPONSE=false makes it answer the client with SSE (the sse rows); MCP_CF_STATEFUL
# is its CF_STATEFUL (stateless, its default, opens a new upstream session per call).
mcp_contextforge() {
  local script="$BENCH/peers/contextforge.sh" info dir="$OUT/contextforge${MCP_CF_STATEFUL:+-stateful}-$1" k v json=true
  [ "$1" = sse ] && json=false
  [ -x "$script" ] || { MCP_WHY="bench/peers/contextforge.sh is missing"; return 1; }
  if [ -z "${CF_INSTALLED:-}" ]; then
    if ! "$script" install >>"$LOG" 2>"$OUT/tmp/cf-install.err"; then
      MCP_WHY="contextforge.sh install: $(tail -1 "$OUT/tmp/cf-install.err")"; return 1
    fi
    CF_INSTALLED=1
  fi
  mkdir -p "$dir"
  if ! info=$(CF_JSON_RESPONSE=$json CF_STATEFUL=${MCP_CF_STATEFUL:-false} \
      $PIN_PROXY "$script" start $CF_PORT "http://127.0.0.1:$2/mcp" "$dir" 2>"$OUT/tmp/cf-start.err"); then
    MCP_WHY="contextforge.sh start: $(tail -1 "$OUT/tmp/cf-start.err")"
    k=$(printf '%s\n' "$info" | sed -n 's/^PID=//p' | tail -1)
    [ -z "$k" ] || kill -TERM "$k" 2>/dev/null || true
    return 1
  fi
  printf '%s\n' "$info" >> "$LOG"
  local pid="" url="" tool="$MCP_TOOL" token="$MCP_TOKEN" stateful=1
  while IFS='=' read -r k v; do
    case "$k" in
      PID) pid=$v ;; URL) url=$v ;; TOOL|TOOL_NAME) tool=$v ;;
      TOKEN) token=$v ;; TOKEN_FILE) token=$(head -n 1 "$v") ;;
      STATEFUL|SESSION) stateful=$v ;;
    esac
  done <<< "$info"
  [ -n "$pid" ] && [ -n "$url" ] || { MCP_WHY="contextforge.sh start printed no PID= or URL="; return 1; }
  PROXY_PID=$pid; PIDS+=("$PROXY_PID")
  MCP_ARGS=(--url "$url" --header "Authorization: Bearer $token" --tool "$tool")
  [ "$stateful" = 0 ] || MCP_ARGS+=(--session)
}

if want mcp; then
  log "MCP: stand-ins on $UP_PORT (JSON) and $MCP_SSE_PORT (SSE)"
  start_upstream $MCP_SSE_PORT --mcp-answer sse
  MCP_SSE_PID=$UP_PID
  "$UP" mint --alg RS256 --key-file "$ROOT/certs/dev/jwt-rsa.key" --issuer "$ISSUER" \
    --audience "$AUDIENCE" --subject alice --kid bench --out "$OUT/tok-mcp.txt"
  MCP_TOKEN=$(head -n 1 "$OUT/tok-mcp.txt")
  # --repeat N: every target's calls rows N times, round by round (the report shows the
  # median and the range); new sessions and held memory once.
  MCP_SKIP=" ${MCP_SKIP_TARGETS:-} "  # MCP_SKIP_TARGETS="a b": targets not to run
  for MCP_ROUND in $(seq 1 "$REPEAT"); do
    mcp_target direct mcp_direct
    mcp_target entitygate-front-door mcp_eg_front_door
    mcp_target entitygate-v3 mcp_eg_v3 "json sse" no
    mcp_target agentgateway mcp_agentgateway
    # ContextForge as it comes (stateless), then stateful for the session rows.
    mcp_target contextforge mcp_contextforge "json sse" no
    MCP_CF_STATEFUL=true mcp_target contextforge-stateful mcp_contextforge json yes
  done
  stop "$MCP_SSE_PID"
fi

cleanup
# The access log, the audit trail and the cold tokens are large and say nothing more.
rm -f "$OUT/tmp/nginx-access.log" "$OUT/tmp/entitygate-audit.jsonl" "$OUT/tok-cold.txt" \
  "$OUT/tmp/entitygate-mcp-audit.jsonl"
# --- report ---------------------------------------------------------------------------------
{
  echo "machine: $NCPU CPUs, $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
  echo "pinning: $PINNING"
  echo "versions: $(nginx -v 2>&1 | sed 's/.*: //'), HAProxy $(haproxy -v | head -1 | awk '{print $3}'), $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}'), $(if command -v h2load >/dev/null; then h2load --version | head -1; else echo 'no h2load'; fi), $(rustc --version)"
  echo "entitygate: ${EG_BIN:-built from $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')} (sha256 $(sha256sum "$EG" | cut -c1-12))"
  if [ -n "${EG_BEFORE:-}" ]; then
    echo "entitygate-before: $EG_BEFORE (sha256 $(sha256sum "$OUT/bin/entitygate-before" | cut -c1-12))"
  fi
  echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "decision steps (bench/steps): $STEPS_CUR in every entitygate row but the steps group's"
  echo "mode: $MODE; groups: $ONLY${SKIPPED:+ (skipped: $SKIPPED)}; entitygate rows x$REPEAT; saturation ${SAT_SECS}s at $CONNS connections; rate $RATE req/s ($RATE_CONNS connections, random 0-$((2 * DELAY_MS)) ms pauses) for ${RATE_SECS}s; h2load $CONNS connections x $H2_STREAMS streams; TLS upstream ALPN $UP_ALPN"
  if want mcp; then
    echo "mcp: bench_mcp_load, saturation ${MCP_SAT_SECS}s at $MCP_CONNS connections; $MCP_RATE calls/s open-loop over $MCP_RATE_CONNS connections for ${MCP_RATE_SECS}s; new sessions $MCP_SESSION_RATE/s; $MCP_HOLD held sessions / streams; agentgateway: ${AGW_BIN:-not built} $( [ -n "${AGW_BIN:-}" ] && "$AGW_BIN" --version 2>/dev/null | tr -d '\n ' | head -c 300); steps: $( [ -f "$BENCH/steps/all.toml" ] && echo bench/steps/all.toml || echo none)"
  fi
  echo
  python3 "$BENCH/report.py" "$RESULTS"
} > "$OUT/report.md"
cat "$OUT/report.md"
log "results: $OUT/report.md (raw: $RESULTS)"
