#!/usr/bin/env bash
# demo.sh — the one-command Steward demo, from a fresh clone: `bash demo.sh`.
#
# Builds steward-server, steward-agent and the demo (tests/demo.rs; debug profile, target/),
# then runs it until Ctrl-C: OpenBao in dev mode with the example site's Vault data,
# steward-server on a copy of deploy/example-site with its web UI and a generated admin
# password, and an agent that reports to it. As root the agent converges a disposable Debian
# root (harness/, booted with systemd); as another user it does dry runs (--noop) against a
# scratch root, and `sudo target/debug/steward-demo` (after this build) gives the full demo.
# Options: `bash demo.sh --help`.
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo >/dev/null || { echo "demo.sh: cargo is missing: install Rust (https://rustup.rs)" >&2; exit 1; }
echo "demo.sh: building steward-server, steward-agent and steward-demo (the first build takes minutes)"
cargo build --locked -p steward-server -p steward-agent -p steward-tests --bins
exec "${CARGO_TARGET_DIR:-target}/debug/steward-demo" "$@"
