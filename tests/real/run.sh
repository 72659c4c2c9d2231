#!/usr/bin/env bash
# The real-world leak suite (issues 7 and 10): Prefect's test harness, pytest-xdist with
# pytest-timeout, uvicorn --reload, an MCP stdio server, `npm run dev`, each deployed the
# ways users deploy ci-janitor, checked against ground truth from /proc:
#   run     `ci-janitor run -- STEP`
#   sweep   one script: eval "$(ci-janitor snapshot --export)"; STEP; ci-janitor sweep
#   bare    the same without --export (negative control; npm-dev only unless named)
#   guard   the sweep script plus `ci-janitor guard start`
#   steps   separate steps under a long-lived agent with CI_JOB_ID (GitLab's shell
#           executor), a concurrent second job on the same agent
#   worker  the same steps under an agent named Runner.Worker, with RUNNER_TRACKING_ID
#
#   bash tests/real/run.sh [--modes M,M] [SCENARIO...]   (prefect-killed xdist-pileup
#                          uvicorn-reload mcp-stdio npm-dev; default: all, every mode)
#
# Cases run under the machine-wide lock the integration tests take
# ($TMPDIR/ci-janitor-tests.lock): no other process test's sweep overlaps ours.
#
# Installs what it needs: the pinned packages into a venv under target/ (kept between runs,
# rebuilt when the pins change), and builds ci-janitor. Needs Python 3.11+ and node/npm.
# Closes with "N passed, M failed"; exits 1 on any failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${CARGO_TARGET_DIR:-target}
venv=$target/real-venv
here=tests/real

# `python3` may be a pyenv shim: build the venv from the interpreter it resolves to.
py=${REAL_PYTHON:-$(python3 -c 'import sys; print(sys.executable)')}
command -v node >/dev/null && command -v npm >/dev/null || { echo "tests/real needs node and npm" >&2; exit 2; }

t0=$(date +%s)
stamp=$( (cat "$here/requirements.txt" "$here/constraints.txt"; "$py" -VV) | sha256sum | cut -c1-16)
if [ "$(cat "$venv/.stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "== installing the real-world packages into $venv"
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$here/requirements.txt" -c "$here/constraints.txt"
  echo "$stamp" > "$venv/.stamp"
fi
"$venv/bin/python" -m pip check --disable-pip-version-check >/dev/null
t1=$(date +%s)

echo "== building ci-janitor (release)"
cargo build --release --quiet --bin ci-janitor
t2=$(date +%s)
echo "== install $((t1 - t0)) s, build $((t2 - t1)) s"

# Prefect must not reach for a profile or a server of the machine's own.
unset PREFECT_API_URL PREFECT_PROFILE
export PREFECT_HOME=$PWD/$target/real-prefect-home
# No __pycache__ in the source tree (the driver and the agent import procs.py).
export PYTHONDONTWRITEBYTECODE=1
lock=${TMPDIR:-/tmp}/ci-janitor-tests.lock
echo "== waiting for the machine-wide test lock $lock"
exec flock "$lock" "$venv/bin/python" "$here/driver.py" \
  --janitor "$PWD/$target/release/ci-janitor" --scratch "$PWD/$target/real-scratch" "$@"
