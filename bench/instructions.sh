#!/usr/bin/env bash
# Instructions per request: a measure for A/B comparisons that noise does not move.
#
#   bench/instructions.sh RUN_DIR BIN [BIN...]
#
# Wall-clock runs on a shared 2-vCPU VM move by 15-50 % between runs of the same binary; the
# number of user-space instructions a warm execute request costs barely moves at all. Each BIN
# serves, under valgrind's callgrind, 200 warm-up requests and then REQUESTS (default 2000)
# measured ones over 4 keep-alive connections; the count covers every thread of the gateway
# (the audit writer included) and none of the kernel's work.
#
# RUN_DIR is the output directory of an earlier bench/run.sh (even --smoke): its HS256 config,
# bodies and bench_upstream are reused; a fresh token is minted. BODY=small|1k|256k picks the
# body (default small). COLD=1 makes every request a new user (a token never seen and one
# status lookup each, as the cold rows of run.sh). KEEP=PREFIX keeps each profile as
# PREFIX.<binary name> for callgrind_annotate. EG_PORT and UP_PORT (default 18080 and 18001,
# run.sh's) move the gateway and the upstream elsewhere, for a machine where another run holds
# those ports: the config's listen address and upstream port are rewritten to match. Needs
# valgrind (Debian: valgrind). STEPS=VARIANT runs the configuration of that
# bench/steps variant (entitygate-HS256-steps-VARIANT.toml of the run: none, constraints, ...,
# all) instead of the run's default (STEPS=all unless the run said otherwise), for the A/B of
# the decision steps in instructions.
#
# A BIN named bench_minimal_proxy* is the ceiling (examples/bench_minimal_proxy.rs): started
# with --listen/--upstream instead of the config, it serves the same load with no checks.
#
# Read the figures as relative: valgrind runs SHA-256 without the CPU's SHA extensions, so the
# token-cache key and the audit hash chain weigh far more here than on the real CPU.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: bench/instructions.sh RUN_DIR BIN [BIN...]" >&2; exit 2; }
RUN=$(cd "$1" && pwd); shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REQUESTS=${REQUESTS:-2000}
BODY_FILE="$RUN/body-${BODY:-small}.json"
EG_PORT=${EG_PORT:-18080}
UP_PORT=${UP_PORT:-18001}
CONF="$RUN/entitygate-HS256${STEPS:+-steps-$STEPS}.toml"
UP="$RUN/bin/bench_upstream"
for f in "$BODY_FILE" "$CONF" "$UP"; do [ -e "$f" ] || { echo "missing: $f" >&2; exit 2; }; done
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 2; }
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT
sed -e "s/127\.0\.0\.1:18080/127.0.0.1:$EG_PORT/; s/127\.0\.0\.1:18001/127.0.0.1:$UP_PORT/" \
  "$CONF" > "$TMP/entitygate.toml"
CONF="$TMP/entitygate.toml"

export BENCH_SECRET="bench-only-hs256-secret-0123456789abcdef"   # TEST-ONLY, as run.sh's
USERS=1
[ "${COLD:-0}" = 1 ] && USERS=$(( (REQUESTS + 200) * $# ))
"$UP" mint --alg HS256 --secret-env BENCH_SECRET --issuer "https://idp.bench/" \
  --audience entitygate --prefix "user$$-" --count "$USERS" --out "$TMP/token.txt"
"$UP" serve --listen "127.0.0.1:$UP_PORT" >"$TMP/upstream.log" 2>&1 &
PIDS+=($!)

NEXT=0  # the next unused token (COLD=1: each is used once)
load() { # load COUNT: COUNT execute requests over 4 keep-alive connections, all must be 200
  python3 - "$TMP/token.txt" "$BODY_FILE" "$1" "$NEXT" "$EG_PORT" <<'PY'
import http.client, sys
tokens = open(sys.argv[1]).read().split()
body = open(sys.argv[2], "rb").read()
first = int(sys.argv[4])
conns = [http.client.HTTPConnection("127.0.0.1", int(sys.argv[5])) for _ in range(4)]
for i in range(int(sys.argv[3])):
    c = conns[i % 4]
    token = tokens[(first + i) % len(tokens)]
    c.request("POST", "/api/v3.1/tools/execute/GITHUB_CREATE_AN_ISSUE", body,
              {"x-api-key": token, "content-type": "application/json"})
    r = c.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(f"request {i}: status {r.status}")
PY
  NEXT=$(( NEXT + $1 ))
}

for bin in "$@"; do
  rm -f "$TMP"/cg.*
  # The minimal hyper proxy (examples/bench_minimal_proxy.rs, the ceiling) takes no config.
  args=(serve --config "$CONF")
  case "$(basename "$bin")" in
    bench_minimal_proxy*)
      args=(--listen "127.0.0.1:$EG_PORT" --upstream "http://127.0.0.1:$UP_PORT") ;;
  esac
  COMPOSIO_API_KEY=sk_bench_only ENTITYGATE_JWT_SECRET="$BENCH_SECRET" RUST_LOG=warn \
    valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.%p" "$bin" "${args[@]}" \
    >"$TMP/gateway.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  for _ in $(seq 120); do
    curl -s -o /dev/null "http://127.0.0.1:$EG_PORT/" && break
    sleep 0.5
  done
  load 200
  callgrind_control --zero "$pid" >/dev/null 2>&1
  load "$REQUESTS"
  callgrind_control --dump "$pid" >/dev/null 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  [ -n "${KEEP:-}" ] && cp "$TMP/cg.$pid.1" "$KEEP.$(basename "$bin")"   # for callgrind_annotate
  total=$(callgrind_annotate "$TMP/cg.$pid.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
  what="${BODY:-small} body"; [ "${COLD:-0}" = 1 ] && what="$what, a new user each"
  [ -n "${STEPS:-}" ] && what="$what, steps $STEPS"
  echo "$bin: $(( total / REQUESTS )) instructions per request ($what, $REQUESTS requests)"
done
