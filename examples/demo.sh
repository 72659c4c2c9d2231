#!/usr/bin/env bash
# The README's first command: build ci-janitor, then show it on a realistic leaky job, the
# way a CI job uses it: snapshot at the start, the tests, then diff and sweep at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
# Wherever cargo puts it (CARGO_TARGET_DIR, a target-dir in a cargo config): cargo says.
janitor=$(cargo build --release --quiet --bin ci-janitor --message-format=json-render-diagnostics \
  | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
if [ ! -x "$janitor" ]; then
  echo "demo: cargo built no ci-janitor executable that this script could find" >&2
  exit 1
fi
state=$(mktemp -d)/state.json

# `snapshot --export` gives the job a marker of its own and prints the `export` lines
# that put it in this shell: everything started from here on carries it, so the daemon
# that escapes into its own session is still known to be the job's.
echo "\$ eval \"\$(ci-janitor snapshot --export)\""
# A failed snapshot stops the demo here, before the leaky suite starts anything.
exports=$($janitor snapshot --export --state "$state")
eval "$exports"
echo
echo "\$ bash examples/leaky-test-suite.sh"
bash examples/leaky-test-suite.sh
echo
echo "\$ ci-janitor diff        # what the job left running (kills nothing)"
$janitor diff --state "$state"
echo
echo "\$ ci-janitor sweep --grace 2s"
set +e
$janitor sweep --state "$state" --grace 2s --report-json "${state%/*}/report.json"
status=$?
set -e
echo
echo "(sweep exited with $status: 1 means leaks were found and killed; the JSON report is"
echo " at ${state%/*}/report.json)"
