#!/usr/bin/env bash
# Runs the whole test suite: unit tests, integration tests against a real
# daemon, and end-to-end tests that boot real guests (qemu, TCG) with their
# network inside namespaces the tests create and remove. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast
