#!/usr/bin/env bash
# Installs the real Composio SDKs and the official MCP SDKs that tests/sdk_e2e.rs and
# tests/mcp_clients.rs drive through the gateway:
#
#   .venv-sdk/             python venv with composio==0.30.0 and mcp==2.3.0
#                          (py_current.py, mcp_py.py)
#   .venv-sdk-old/         python venv with composio-core==0.7.22   (py_old.py)
#   tests/sdk/node_modules @composio/core 0.19.0 and @modelcontextprotocol/sdk 1.32.2 from
#                          package-lock.json (js_current.mjs, mcp_js.mjs)
#
# All three are gitignored. Idempotent: each is stamped with what it was installed from (the
# pinned version, or the hash of package-lock.json) and is left alone while the stamp matches,
# so a second run is a no-op that takes milliseconds. Needs python3 (3.11 tested, with the
# venv module), node 20+ and npm, and network access to PyPI and the npm registry the first
# time only. Works under CI=true. Set PYTHON to pick another interpreter.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SDK="$ROOT/tests/sdk"
PYTHON="${PYTHON:-python3}"
STAMP=".entitygate-sdk-stamp"

log() { echo "sdk setup: $*"; }

need() {
    command -v "$1" >/dev/null 2>&1 || {
        echo "sdk setup: '$1' not found on PATH; $2" >&2
        exit 1
    }
}

# venv DIR PINS: a virtualenv at DIR with exactly the requirements PINS (space-separated).
venv() {
    local dir="$ROOT/$1" pin="$2"
    local want="$pin python=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    if [[ -x "$dir/bin/python" && -f "$dir/$STAMP" && "$(cat "$dir/$STAMP")" == "$want" ]]; then
        log "$1: $pin already installed"
        return
    fi
    if [[ ! -x "$dir/bin/python" ]]; then
        log "$1: creating virtualenv ($PYTHON -m venv $dir)"
        rm -rf "$dir"
        "$PYTHON" -m venv "$dir"
    fi
    log "$1: pip install $pin"
    rm -f "$dir/$STAMP"
    # shellcheck disable=SC2086 # PINS is a list of requirements
    "$dir/bin/python" -m pip install --disable-pip-version-check --no-input --quiet $pin
    # Found without importing it (importing composio-core 0.7 writes to \$HOME/.composio).
    "$dir/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('composio') is None)"
    if [[ "$pin" == *mcp==* ]]; then "$dir/bin/python" -c 'import mcp.client.streamable_http'; fi
    echo "$want" >"$dir/$STAMP"
    log "$1: done"
}

node_modules() {
    local want
    want="$(node --version) $(cksum <"$SDK/package-lock.json" | cut -d' ' -f1,2)"
    if [[ -f "$SDK/node_modules/$STAMP" && "$(cat "$SDK/node_modules/$STAMP")" == "$want" ]]; then
        log "tests/sdk/node_modules: package-lock.json already installed"
        return
    fi
    log "tests/sdk/node_modules: npm ci (@composio/core, @modelcontextprotocol/sdk from package-lock.json)"
    # EBADENGINE warnings are expected: @composio/core 0.19.0 asks for node >= 22 and works on 20.
    (cd "$SDK" && npm ci --no-audit --no-fund --loglevel=error)
    (cd "$SDK" && node --input-type=module -e "import '@composio/core'; import '@modelcontextprotocol/sdk/client/streamableHttp.js'")
    echo "$want" >"$SDK/node_modules/$STAMP"
    log "tests/sdk/node_modules: done"
}

need "$PYTHON" "install Python 3.11 (with its venv module) or set PYTHON"
need node "install Node.js 20 or newer"
need npm "install npm (it ships with Node.js)"

venv .venv-sdk "composio==0.30.0 mcp==2.3.0"
venv .venv-sdk-old composio-core==0.7.22
node_modules
log "ready"
