#!/usr/bin/env bash
# Builds the container image from the top-level Containerfile: a statically linked
# `entitygate` (glibc, `+crt-static`; Cargo profile `image`: release with fat LTO), stripped, with Debian's CA bundle and the default
# configuration, in a build context of its own (target/container/).
#
#   bash deploy/container/build.sh [IMAGE]      # default: localhost/entitygate:<crate version>
#
# Needs podman (or set CONTAINER_TOOL=buildah/docker), strip (binutils) and
# /etc/ssl/certs/ca-certificates.crt (Debian's ca-certificates). ENTITYGATE_IMAGE_TARGET_DIR
# moves the release build's target directory (CI keeps it across runs).
set -euo pipefail
cd "$(dirname "$0")/../.."

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
image=${1:-localhost/entitygate:$version}
tool=${CONTAINER_TOOL:-podman}
triple=x86_64-unknown-linux-gnu
target_dir=${ENTITYGATE_IMAGE_TARGET_DIR:-target}

# --target: with an explicit triple, +crt-static applies to the binary only, not to build
# scripts and proc macros (which must stay dynamic). The default features stay on, so the image
# also has `entitygate demo` (the sandbox Composio runs only under that subcommand).
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --locked --profile image --target "$triple" --target-dir "$target_dir" --bin entitygate
bin="$target_dir/$triple/image/entitygate"

# A dynamic binary would start nowhere in a scratch image: refuse it here.
if readelf -l "$bin" | grep 'Requesting program interpreter' >/dev/null; then  # no -q: pipefail
    echo "build.sh: $bin is dynamically linked" >&2
    exit 1
fi

ctx=target/container
rm -rf "$ctx"
mkdir -p "$ctx/etc/entitygate" "$ctx/var/lib" "$ctx/state"
chmod 0700 "$ctx/state"
strip -o "$ctx/entitygate" "$bin"
chmod 0555 "$ctx/entitygate"
install -m 0444 /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
install -m 0444 deploy/container/nsswitch.conf "$ctx/nsswitch.conf"
install -m 0444 deploy/kubernetes/base/entitygate.toml "$ctx/etc/entitygate/entitygate.toml"

"$tool" build --tag "$image" --file Containerfile "$ctx"
echo "built $image"
