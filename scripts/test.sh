#!/usr/bin/env bash
# The test command from the README: builds, then runs the whole suite twice in a row, the
# second run proving that the first left nothing behind for it to find.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --all-targets
for round in 1 2; do
  echo "== test round $round"
  cargo test -- --test-threads "${TEST_THREADS:-2}"
  # Proof that the round left nothing behind: every process test runs its fixtures with
  # their cwd under cij-test-procs/, so any survivor shows up here (and fails the script).
  "${CARGO_TARGET_DIR:-target}/debug/cij-fixture" leftovers --dir "${CARGO_TARGET_DIR:-target}/cij-test-procs"
done
