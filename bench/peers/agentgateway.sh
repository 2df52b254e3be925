#!/usr/bin/env bash
# agentgateway, the like-for-like MCP peer (issue 32): a release build of a tagged release.
#
#   bench/peers/agentgateway.sh build     # idempotent; the binary's path is the last stdout line
#   bench/peers/agentgateway.sh path      # the cached binary's path, or exit 3 if not built yet
#   bench/peers/agentgateway.sh prepare   # source + Cargo changes only (no compile); prints the dir
#
# Start it (run.sh): render bench/peers/agentgateway.yaml (PORT, UPSTREAM_URL, JWKS_FILE; the JWKS
# from bench/peers/jwks.py), then `$BIN -f rendered.yaml` (stdout: one access-log line per
# request). Ready when 127.0.0.1:18097/healthz/ready answers 200 (or the port listens).
# What a client must do (checked on the v1.2.1 build): send `Accept: application/json,
# text/event-stream` and `Content-Type: application/json`; `initialize` first (the answer carries
# Mcp-Session-Id), then send that id on every request (without it: 422); RS256 tokens whose header
# has kid "bench" (without a kid: 401). Answers are text/event-stream (one `data:` event) whatever
# the upstream answered; notifications get 202. A tool the rule denies is hidden from tools/list
# and its call is a JSON-RPC error (HTTP 400, -32602 "Unknown tool"), not forwarded; no or bad
# token: 401 text/plain.
#
# Which release: v1.2.1, the newest tag whose rust-toolchain.toml (1.95) this machine has; v1.4.x
# pins rust 1.97. AGW_TAG/AGW_COMMIT pick another tag (the Cargo changes below are v1.2.1's).
# Profile: theirs, `release` (codegen-units = 1, fat LTO: what their Dockerfile ships), with the
# default features (jemalloc). Not `--features agentgateway/ui` as in their image: the admin UI
# needs a Node build of ui/ and plays no part in proxying. AGW_PROFILE=quick-release is their
# faster, non-LTO profile: only as a stated fallback. Their .cargo/config.toml (tokio_unstable,
# frame pointers) applies as in their builds.
#
# Source, in order: $AGW_SRC (a checkout of the tag), `git clone --depth 1 --branch TAG` from
# GitHub when reachable, the git mirror at $AGW_MIRROR (default
# /work/.mirror/agentgateway+agentgateway/repo) when present; else exit 3.
#
# Cargo changes, applied only when github.com/gitlab.com are unreachable (v1.2.1's Cargo.toml pulls
# four crates from git; cargo then cannot resolve at all). Each is replaced by the crates.io release
# it carries the version of, and cargo re-resolves only those entries of Cargo.lock:
#   - google-cloud-auth: git googleapis/google-cloud-rust rev 58058110 (says 1.10.0) -> crates.io
#     1.11.0 as a local patch crate (patches/google-cloud-auth-1.11.0). That rev sits between the
#     1.10.0 and 1.11.0 releases and already has what agentgateway calls (feature `gdch`, public
#     credentials::gdch::Builder); crates.io 1.10.0 has neither (`__gdch`, a private module), so it
#     does not compile. 1.11.0 raised some minimum versions (tokio 1.52.3, serde_json 1.0.150,
#     reqwest 0.13.4, aws-lc-rs 1.17.0, google-cloud-gax 1.11.0); the patch crate lowers them back
#     to the versions in their Cargo.lock, so nothing else in the lock moves (tokio, hyper, rustls
#     ... stay theirs). Used only for GCP backend authentication, not on the MCP path.
#   - schemars: git howardjohn/schemars rev 4364354f (=1.0.4) -> crates.io 1.0.4 plus a local patch
#     crate (patches/schemars-1.0.4) adding the fork's `arcstr1` feature (JsonSchema for
#     arcstr::ArcStr, as a string). Needed for resolution; schema generation is not in this build.
#   - http-serde: gitlab howardjohn/http-serde rev c2e482be (2.1.1) -> crates.io 2.1.1 plus a local
#     patch crate (patches/http-serde-2.1.1) adding the fork's `header_name` and `scheme` modules
#     (and their `option::` forms): serialize as the string, parse from it, like its `method`.
#     agentgateway uses them for config (de)serialization.
#   - wiremock: git howardjohn/wiremock-rs (0.6.5) -> crates.io 0.6.5 via patches/wiremock-0.6.5 with
#     an empty `tls` feature (the fork's TLS mock server). agentgateway lists it as a dependency but
#     uses it only in cfg(test)/internal_benches helpers, which this build does not compile.
# Cargo.lock afterwards differs from theirs only in those sources, google-cloud-auth 1.10.0 ->
# 1.11.0, and three crates the wiremock fork pulled in (axum-server, rcgen 0.13.2, rustls-pemfile)
# gone.
#
# Needs: rust per rust-toolchain.toml (the channel, or channel.0), protoc (Debian protobuf-compiler;
# apt-get when root), crates.io. Cache: ${EG_BENCH_CACHE:-~/.cache/entitygate-bench}/agentgateway-TAG
# (src/, patches/, target/, bin/agentgateway, build.log). The build runs under nice -n 5.
set -euo pipefail

TAG=${AGW_TAG:-v1.2.1}
COMMIT=${AGW_COMMIT:-6a2d02dbb35a289738d0fdba88e5a474e432a72a}
PROFILE=${AGW_PROFILE:-release}
MIRROR=${AGW_MIRROR:-/work/.mirror/agentgateway+agentgateway/repo}
CACHE="${EG_BENCH_CACHE:-$HOME/.cache/entitygate-bench}/agentgateway-$TAG"
SRC="$CACHE/src"
BIN_DIR="$CACHE/bin"
[ "$PROFILE" = release ] || BIN_DIR="$CACHE/bin-$PROFILE"
BIN="$BIN_DIR/agentgateway"

die3() { echo "agentgateway.sh: $*" >&2; exit 3; }
say() { echo "agentgateway.sh: $*" >&2; }

reachable() { # reachable URL: a git host answers for this repository
  GIT_TERMINAL_PROMPT=0 timeout 20 git ls-remote -q "$1" HEAD >/dev/null 2>&1
}

fetch_source() {
  [ -f "$SRC/.agw-source" ] && return 0
  rm -rf "$SRC"; mkdir -p "$SRC"
  if [ -n "${AGW_SRC:-}" ]; then
    [ -f "$AGW_SRC/Cargo.toml" ] || die3 "AGW_SRC=$AGW_SRC has no Cargo.toml"
    say "source: copy of $AGW_SRC"
    tar -C "$AGW_SRC" --exclude=./target --exclude=./.git -cf - . | tar -C "$SRC" -xf -
    echo "AGW_SRC $AGW_SRC" > "$SRC/.agw-source"
  elif reachable https://github.com/agentgateway/agentgateway; then
    say "source: git clone $TAG from github.com"
    rm -rf "$SRC"
    git clone -q --depth 1 --branch "$TAG" https://github.com/agentgateway/agentgateway "$SRC"
    echo "github $TAG" > "$SRC/.agw-source"
  elif [ -d "$MIRROR" ] && git --git-dir="$MIRROR" rev-parse -q --verify "$TAG^{commit}" >/dev/null; then
    say "source: $TAG from the mirror $MIRROR"
    git --git-dir="$MIRROR" archive "$TAG" | tar -x -C "$SRC"
    echo "mirror $MIRROR $TAG $(git --git-dir="$MIRROR" rev-parse "$TAG^{commit}")" > "$SRC/.agw-source"
  else
    rm -rf "$SRC"
    die3 "no source for $TAG: set AGW_SRC, or reach github.com, or provide the mirror $MIRROR"
  fi
}

pick_toolchain() { # sets TOOLCHAIN from rust-toolchain.toml: the channel, else channel.0
  local ch
  ch=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$SRC/rust-toolchain.toml")
  for TOOLCHAIN in "$ch" "$ch.0"; do
    rustup run "$TOOLCHAIN" rustc --version >/dev/null 2>&1 && return 0
  done
  die3 "$TAG needs rust $ch (rust-toolchain.toml); not installed (rustup toolchain install $ch)"
}

crate_dir() { # crate_dir NAME VERSION: fetch NAME =VERSION from crates.io, print its source dir
  local tmp="$CACHE/fetch-$1"
  rm -rf "$tmp"; mkdir -p "$tmp/src"
  printf '[package]\nname = "agwfetch"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\n%s = "=%s"\n' \
    "$1" "$2" > "$tmp/Cargo.toml"
  echo 'fn main() {}' > "$tmp/src/main.rs"
  (cd "$tmp" && cargo fetch -q) || die3 "cannot fetch $1 $2 from crates.io"
  (cd "$tmp" && cargo metadata -q --format-version 1) | python3 -c '
import json, os, sys
name, version = sys.argv[1], sys.argv[2]
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == name and p["version"] == version:
        print(os.path.dirname(p["manifest_path"]))
' "$1" "$2"
}

patch_crate() { # patch_crate NAME VERSION: copy the crates.io source to $CACHE/patches/NAME-VERSION
  local from dest="$CACHE/patches/$1-$2"
  from=$(crate_dir "$1" "$2")
  [ -n "$from" ] || die3 "crates.io has no $1 $2"
  rm -rf "$dest"; mkdir -p "$CACHE/patches"
  cp -r "$from" "$dest"; rm -f "$dest/.cargo-ok"
}

apply_cargo_changes() { # the documented replacements of the git dependencies (see the header)
  [ -f "$SRC/.agw-patched" ] && return 0
  # Start again from their files (a run interrupted half way leaves them changed).
  if [ -f "$SRC/Cargo.toml.orig" ]; then cp "$SRC/Cargo.toml.orig" "$SRC/Cargo.toml"; cp "$SRC/Cargo.lock.orig" "$SRC/Cargo.lock"; fi
  [ "$TAG" = v1.2.1 ] || die3 "git hosts unreachable and the Cargo changes here are for v1.2.1 only"
  say "github.com/gitlab.com unreachable: replacing the git dependencies with crates.io releases"
  cp "$SRC/Cargo.toml" "$SRC/Cargo.toml.orig"; cp "$SRC/Cargo.lock" "$SRC/Cargo.lock.orig"

  patch_crate schemars 1.0.4
  python3 - "$CACHE/patches/schemars-1.0.4" <<'PY'
import sys
d = sys.argv[1]
p = d + "/Cargo.toml"; s = open(p).read()
s = s.replace('[features]\n_ui_test = []\n', '[features]\n_ui_test = []\narcstr1 = ["dep:arcstr1"]\n', 1)
s = s.replace('[dependencies.smol_str02]', '[dependencies.arcstr1]\nversion = "1.2"\noptional = true\n'
              'default-features = false\npackage = "arcstr"\n\n[dependencies.smol_str02]', 1)
assert 'arcstr1 = ["dep:arcstr1"]' in s and '[dependencies.arcstr1]' in s
open(p, "w").write(s)
p = d + "/src/json_schema_impls/mod.rs"; s = open(p).read()
old = '#[cfg(feature = "smol_str02")]\nforward_impl!(smol_str02::SmolStr => alloc::string::String);'
assert old in s
s = s.replace(old, old + '\n\n// Local stand-in for the arcstr1 feature of howardjohn/schemars (agentgateway v1.2.1 build).\n'
              '#[cfg(feature = "arcstr1")]\nforward_impl!(arcstr1::ArcStr => alloc::string::String);', 1)
open(p, "w").write(s)
PY
  patch_crate google-cloud-auth 1.11.0
  # Their lock's versions satisfy what the git rev needed; 1.11.0 only raised the minimums.
  sed -i -e '/^\[dependencies.aws-lc-rs\]/,/^version/ s/^version = "1.17.0"/version = "1.16.3"/' \
    -e '/^\[dependencies.google-cloud-gax\]/,/^version/ s/^version = "1.11.0"/version = "1.10.0"/' \
    -e '/^\[dependencies.reqwest\]/,/^version/ s/^version = "0.13.4"/version = "0.13.3"/' \
    -e '/^\[dependencies.serde_json\]/,/^version/ s/^version = "1.0.150"/version = "1.0.149"/' \
    -e '/^\[dependencies.tokio\]/,/^version/ s/^version = "1.52.3"/version = "1.52.2"/' \
    -e '/^\[dev-dependencies.tokio\]/,/^version/ s/^version = "1.52.3"/version = "1.52.2"/' \
    "$CACHE/patches/google-cloud-auth-1.11.0/Cargo.toml"
  patch_crate http-serde 2.1.1
  python3 - "$CACHE/patches/http-serde-2.1.1/src/lib.rs" <<'PY'
import sys
p = sys.argv[1]; s = open(p).read()
def module(name, ty, what, visitor):
    return f"""
/// For `{ty}` (local stand-in for the howardjohn/http-serde fork, agentgateway v1.2.1 build)
///
/// `#[serde(with = "http_serde::{name}")]`
pub mod {name} {{
    use serde::de;
    use serde::de::{{Unexpected, Visitor}};
    use serde::{{Deserializer, Serializer}};
    use std::fmt;

    /// Implementation detail. Use derive annotations instead.
    #[inline]
    pub fn serialize<S: Serializer>(value: &{ty}, ser: S) -> Result<S::Ok, S::Error> {{
        ser.serialize_str(value.as_str())
    }}

    pub(crate) struct {visitor};

    impl {visitor} {{
        #[inline]
        pub(crate) fn new<'de, D: Deserializer<'de>>(_: &D) -> Self {{
            Self
        }}
    }}

    impl<'de> Visitor<'de> for {visitor} {{
        type Value = {ty};

        #[inline]
        fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {{
            formatter.write_str("{what}")
        }}

        #[inline]
        fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {{
            deserializer.deserialize_str(self)
        }}

        fn visit_str<E: de::Error>(self, val: &str) -> Result<Self::Value, E> {{
            val.parse()
                .map_err(|_| de::Error::invalid_value(Unexpected::Str(val), &self))
        }}
    }}

    /// Implementation detail.
    #[inline]
    pub fn deserialize<'de, D>(de: D) -> Result<{ty}, D::Error>
    where
        D: Deserializer<'de>,
    {{
        de.deserialize_str({visitor})
    }}
}}
"""
anchor = "/// For `http::Uri`\n"
assert anchor in s
s = s.replace(anchor, module("header_name", "::http::HeaderName", "header name", "HeaderNameVisitor")
              + module("scheme", "::http::uri::Scheme", "URI scheme", "SchemeVisitor") + "\n" + anchor, 1)
old = "    boilerplate! { authority, ::http::uri::Authority, crate::authority::AuthorityVisitor }\n"
assert old in s
s = s.replace(old, old + "    boilerplate! { header_name, ::http::HeaderName, crate::header_name::HeaderNameVisitor }\n"
              "    boilerplate! { scheme, ::http::uri::Scheme, crate::scheme::SchemeVisitor }\n", 1)
open(p, "w").write(s)
PY
  patch_crate wiremock 0.6.5
  printf '\n# Local stand-in for the howardjohn/wiremock-rs fork (agentgateway v1.2.1 build): the fork adds TLS\n# serving under this feature; here it is a no-op, so only resolution works (agentgateway uses wiremock\n# in its tests only, which this build does not compile).\n[features]\ntls = []\n' \
    >> "$CACHE/patches/wiremock-0.6.5/Cargo.toml"

  local t="$SRC/Cargo.toml"
  sed -i -e '/^\[patch.crates-io\]$/d' -e '/^schemars = { git = /d' -e '/^http-serde = { git = /d' \
    -e '/^wiremock = { git = /d' \
    -e 's|^google-cloud-auth = { git = "https://github.com/googleapis/google-cloud-rust/", rev = "58058110bf9a01074bf8e1fecf0f1d2b7ca831f4",|google-cloud-auth = { version = "=1.11.0",|' \
    -e 's|^schemars = { version = "=1.0.4", git = "https://github.com/howardjohn/schemars", rev = "4364354fa41897a0c2001d891c0a9a38eafedb82",|schemars = { version = "=1.0.4",|' \
    "$t"
  { printf '[patch.crates-io]\n# bench/peers/agentgateway.sh: local stand-ins for the git dependencies (see its header)\n'
    printf 'schemars = { path = "../patches/schemars-1.0.4" }\nwiremock = { path = "../patches/wiremock-0.6.5" }\n'
    printf 'http-serde = { path = "../patches/http-serde-2.1.1" }\ngoogle-cloud-auth = { path = "../patches/google-cloud-auth-1.11.0" }\n\n'
    cat "$t"; } > "$t.new" && mv "$t.new" "$t"
  if grep -q 'git = ' "$t"; then die3 "a git dependency is left in $t (unexpected $TAG layout)"; fi
  # Re-resolve: cargo keeps every locked entry it can and resolves only the changed ones.
  (cd "$SRC" && cargo metadata -q --format-version 1 >/dev/null) || die3 "cargo cannot resolve the changed Cargo.toml"
  if grep -q 'source = "git+' "$SRC/Cargo.lock"; then die3 "Cargo.lock still has git sources"; fi
  touch "$SRC/.agw-patched"
}

prepare() {
  fetch_source
  pick_toolchain
  export RUSTUP_TOOLCHAIN=$TOOLCHAIN
  if [ ! -f "$SRC/.agw-patched" ] && grep -q 'git = ' "$SRC/Cargo.toml"; then
    if reachable https://github.com/howardjohn/schemars && reachable https://gitlab.com/howardjohn/http-serde &&
       reachable https://github.com/howardjohn/wiremock-rs && reachable https://github.com/googleapis/google-cloud-rust/; then
      say "git hosts reachable: building their Cargo.toml/Cargo.lock unchanged"
    else
      apply_cargo_changes
    fi
  fi
}

build() {
  if [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1; then echo "$BIN"; return 0; fi
  mkdir -p "$CACHE"
  prepare
  command -v protoc >/dev/null || {
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      say "installing protoc (protobuf-compiler)"; apt-get install -y -q protobuf-compiler >&2 || true
    fi
    command -v protoc >/dev/null || die3 "crates/protos needs protoc: apt-get install protobuf-compiler"
  }
  local locked=--locked
  say "cargo build --profile $PROFILE -p agentgateway-app (rust $TOOLCHAIN; long: fat LTO, one codegen unit); log: $CACHE/build.log"
  ( cd "$SRC" && VERSION=$TAG GIT_REVISION=$COMMIT CARGO_TARGET_DIR="$CACHE/target" \
      nice -n 5 cargo build $locked --profile "$PROFILE" -p agentgateway-app ) >"$CACHE/build.log" 2>&1 ||
    { tail -20 "$CACHE/build.log" >&2; die3 "build failed (see $CACHE/build.log)"; }
  mkdir -p "$BIN_DIR"
  cp "$CACHE/target/$PROFILE/agentgateway" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
  "$BIN" --version >&2 || true
  echo "$BIN"
}

case "${1:-}" in
  build) build ;;
  prepare) mkdir -p "$CACHE"; prepare; echo "$SRC" ;;
  path) [ -x "$BIN" ] || die3 "not built yet: bench/peers/agentgateway.sh build"; echo "$BIN" ;;
  *) echo "usage: bench/peers/agentgateway.sh build|path|prepare" >&2; exit 2 ;;
esac
