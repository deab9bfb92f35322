#!/usr/bin/env bash
# Runs the whole test suite: unit tests, integration tests against a real
# daemon, and end-to-end tests that boot real guests (qemu, TCG) with their
# network inside namespaces the tests create and remove. Needs root.
#
# Which tests run. No test passes without running: a test with a need is
# `#[ignore = "needs …"]`, so a plain `cargo test` reports it as ignored,
# with its reason, and a test that runs fails if its need is unmet (the
# convention is written out in crates/hangar/tests/common/mod.rs).
#  - "needs root: …" tests run here when this script runs as root (always
#    here and in CI): cargo test -- --include-ignored.
#  - Tests with any other need carry a marker in their name. MARKERS below
#    lists them; `met_<marker>` says whether this machine meets the need.
#    Unmet ones are left out (--skip <marker>) and counted as ignored.
#      real_firecracker  a Firecracker binary: set HANGAR_TEST_FIRECRACKER=/path
#                        (the conformance backend and the boot configuration)
#      dm_snapshot       device-mapper (/dev/mapper/control and dmsetup)
#      bench_            a quiet machine: benchmarks, run with HANGAR_TEST_BENCH=1
# cargo runs the packages in name order, so the `hangar` e2e tests build (or
# reuse) the default image before the hangar-vmm boot tests look for its
# vmlinux (or set HANGAR_TEST_KERNEL).
# The last lines are the tests that did not run with their reasons, then one
# total over all test binaries: "N passed, N failed, N ignored". The exit
# code is cargo test's.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

MARKERS=(real_firecracker dm_snapshot bench_)
met_real_firecracker() { [ -n "${HANGAR_TEST_FIRECRACKER:-}" ]; }
met_dm_snapshot() { [ -e /dev/mapper/control ] && command -v dmsetup >/dev/null; }
met_bench_() { [ "${HANGAR_TEST_BENCH:-}" = 1 ]; }

# The test build of the binary has the daemon's crash points compiled in
# (the fault suite, crates/hangar/tests/faults.rs); they are armed only by
# the FAILPOINTS environment variable, which no other test sets.
FEATURES=(--features hangar/failpoints)

# The guest agent every e2e guest boots with (static musl build).
./scripts/build-agent.sh
cargo build --workspace --all-targets "${FEATURES[@]}"

libtest_args=()
unmet=()
if [ "$(id -u)" -eq 0 ]; then
  libtest_args+=(--include-ignored)
  for m in "${MARKERS[@]}"; do
    if ! "met_$m"; then
      unmet+=("$m")
      libtest_args+=(--skip "$m")
    fi
  done
else
  echo "test.sh: not root, so the tests that need root are ignored (see the list at the end)" >&2
fi

log=$(mktemp)
listing=$(mktemp)
# The attack tests make the group `hangar-testers` for their socket user
# (crates/hangar/tests/common/roles.rs); one this run made goes at the end.
test_group=hangar-testers
group_was_there=false
getent group "$test_group" >/dev/null && group_was_there=true
cleanup() {
  rm -f "$log" "$listing"
  if [ "$group_was_there" = false ] && [ "$(id -u)" -eq 0 ] && getent group "$test_group" >/dev/null; then
    groupdel "$test_group" || echo "test.sh: cannot remove the test group $test_group" >&2
  fi
}
trap cleanup EXIT

set +e
cargo test --workspace "${FEATURES[@]}" --no-fail-fast -- "${libtest_args[@]}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# The skipped tests are #[ignore]d, so filtering on their markers without
# --include-ignored runs nothing and prints each one with its reason.
if [ ${#unmet[@]} -gt 0 ]; then
  cargo test --workspace "${FEATURES[@]}" --no-fail-fast -- "${unmet[@]}" >"$listing" 2>&1
fi
set -e

# Tests that did not run, with the test binary they belong to and why.
ignored_list() {
  awk '
    # "Running tests/x.rs (target/debug/deps/x-HASH)" or
    # "Running unittests src/lib.rs (target/debug/deps/crate-HASH)".
    /^ *Running / {
      bin = $NF
      gsub(/^\(.*\/|-[0-9a-f]+\)$/, "", bin)
      bin = ($2 == "unittests" ? bin " " $3 : $2)
    }
    /^ *Doc-tests / { bin = $2 " doc-tests" }
    /^test .* \.\.\. ignored/ {
      name = $2
      reason = $0
      sub(/^test .* \.\.\. ignored,? ?/, "", reason)
      printf "  %s %s: %s\n", bin, name, (reason == "" ? "(no reason given)" : reason)
    }' "$@"
}
not_run=$(ignored_list "$log" "$listing")
if [ -n "$not_run" ]; then
  echo
  echo "not run here:"
  echo "$not_run"
fi

if [ "$status" -ne 0 ]; then
  echo
  echo "cargo test failed (exit $status): the failures are above"
fi

# One total over every "test result:" line; "filtered out" counts only the
# tests skipped by marker above, so they are added to the ignored ones.
echo
awk '
  /^test result:/ {
    for (i = 1; i <= NF; i++) {
      if ($i ~ /^passed;?$/) passed += $(i - 1)
      if ($i ~ /^failed;?$/) failed += $(i - 1)
      if ($i ~ /^ignored;?$/) ignored += $(i - 1)
      if ($i == "filtered") ignored += $(i - 1)
    }
  }
  END { printf "%d passed, %d failed, %d ignored\n", passed, failed, ignored }' "$log"
# A test binary that crashed or a target that did not build prints no
# "test result:" line, so the total above cannot count it: say so.
if [ "$status" -ne 0 ] && ! grep -qE '^test result: FAILED' "$log"; then
  echo "total incomplete: cargo test failed but no test reported a failure (a test binary crashed or did not build); see above"
fi
exit "$status"
