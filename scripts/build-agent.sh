#!/usr/bin/env bash
# Builds Hangar's guest agent: a static x86_64-unknown-linux-musl binary
# (it runs inside guests whose images may have no libc at all), with the
# size-optimised `agent` profile of Cargo.toml. The daemon finds it at
# target/x86_64-unknown-linux-musl/agent/hangar-agent from a checkout's
# target/{debug,release}/hangar; install it as /usr/local/lib/hangar/hangar-agent
# (or set [guest] agent) for a `hangar` installed elsewhere.
# Needs: rustup target add x86_64-unknown-linux-musl; apt-get install musl-tools
# (scripts/install-deps.sh does both).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
  echo "build-agent: the musl target is missing: run scripts/install-deps.sh (rustup target add x86_64-unknown-linux-musl)" >&2
  exit 1
fi
cargo build --profile agent -p hangar-agent --target x86_64-unknown-linux-musl
out=${CARGO_TARGET_DIR:-$PWD/target}/x86_64-unknown-linux-musl/agent/hangar-agent
echo "guest agent: $out ($(stat -c %s "$out") bytes)"
