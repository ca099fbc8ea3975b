#!/usr/bin/env bash
# deploy/build-debs.sh [OUT_DIR] — build the steward-server and steward-agent Debian packages
# (release profile, cargo-deb) into OUT_DIR (default: target/debian/ of this repository, whatever
# CARGO_TARGET_DIR says), then print their paths, one per line, on stdout.
#
# Installs cargo-deb (pinned) when it is missing. Packaging metadata: [package.metadata.deb] at
# the end of server/Cargo.toml and agent/Cargo.toml; what goes in: deploy/README.md, "Packages".
# The release profile keeps line tables (debug = "line-tables-only"); they go into separate
# -dbgsym .ddeb packages beside the .debs (server 5 MB instead of 19 MB, agent 2 MB instead of
# 7 MB); that needs objcopy (binutils).
# Env: CARGO_DEB_VERSION (default 3.8.0), CARGO_DEB_FLAGS (extra flags for `cargo deb`, e.g.
# --fast), CARGO_TARGET_DIR (honoured by cargo and cargo-deb).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
ROOT="$PWD"
OUT="$(mkdir -p "${1:-$ROOT/target/debian}" && cd "${1:-$ROOT/target/debian}" && pwd)"
CARGO_DEB_VERSION="${CARGO_DEB_VERSION:-3.8.0}"

if ! cargo deb --version >/dev/null 2>&1; then
    echo "build-debs: installing cargo-deb $CARGO_DEB_VERSION" >&2
    cargo install cargo-deb --locked --version "=$CARGO_DEB_VERSION" >&2
fi

for package in steward-server steward-agent; do
    echo "build-debs: building $package" >&2
    # --locked: the packages are built from exactly what Cargo.lock says, as CI's checks are.
    # Progress goes to stderr; cargo-deb prints the paths it wrote (.deb and .ddeb) on stdout.
    # shellcheck disable=SC2086 # CARGO_DEB_FLAGS is a list of flags
    written="$(cargo deb --locked -p "$package" --output "$OUT/" \
        --dbgsym --compress-debug-symbols=zlib ${CARGO_DEB_FLAGS:-})"
    deb="$(printf '%s\n' "$written" | grep '\.deb$' | tail -n 1 || true)"
    [ -f "$deb" ] || { echo "build-debs: cargo deb did not produce $package ($written)" >&2; exit 1; }
    for file in $written; do
        echo "build-debs: $file ($(du -h "$file" | cut -f1))" >&2
    done
    echo "$deb"
done
