#!/usr/bin/env bash
# Sweep vs its C reference (issue 14): find + kill + all clear with grace 0, N = 1,000 and
# 5,000 leaked processes in 100 groups (10% ignore SIGTERM, 10% listen on TCP) beside 100
# bystanders that must survive; every round of every cleaner in fresh PID and network
# namespaces. Cleaners: bench/sweep_floor.c (the floor), ci-janitor sweep, the runner-style
# environ scan (bench/environ_kill.c), pkill and psutil.
#
#   bash bench/sweep_ns.sh                       # 5 interleaved rounds + 1 warm-up per size
#   bash bench/sweep_ns.sh --rounds 7 --sizes 1000
#   bash bench/sweep_ns.sh --cleaners floor,ci-janitor
#   CIJ_BEFORE=<commit> bash bench/sweep_ns.sh --cleaners floor,ci-janitor,ci-janitor@before
#                                                # also a build of an earlier commit
#   CIJ_BEFORE_BIN=path/to/ci-janitor bash bench/sweep_ns.sh --cleaners ...,ci-janitor@before
#                                                # that build, already made
#
# Needs root (unshare of the PID and network namespaces). Builds a static ci-janitor into
# target/bench-sweep and the C helpers into target/bench-sweep/tools; results in
# target/bench-sweep/results-ns.md and results-ns.json. Nothing outlives a round: each runs
# under its own namespace's pid 1, and the kernel kills what is left when that exits.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/bench-sweep
TOOLS=$OUT/tools
mkdir -p "$TOOLS"
log() { echo "[sweep-ns] $*" >&2; }

need_apt=()
command -v pkill >/dev/null || need_apt+=(procps)
command -v setsid >/dev/null || need_apt+=(util-linux)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v gcc >/dev/null || need_apt+=(gcc libc6-dev)
if (( ${#need_apt[@]} )); then
  log "installing ${need_apt[*]} with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
PY=$(python3 -c 'import sys; print(sys.executable)')
if ! "$PY" -c 'import psutil' 2>/dev/null; then
  log "installing psutil with pip"
  if ! "$PY" -m pip install --quiet --disable-pip-version-check psutil; then
    "$PY" -m venv "$OUT/venv"
    "$OUT/venv/bin/python" -m pip install --quiet --disable-pip-version-check psutil
    PY=$OUT/venv/bin/python
  fi
fi

HOST=$(rustc -vV | awk '/^host:/ {print $2}')
log "building static ci-janitor for $HOST"
RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=$OUT \
  cargo build --quiet --release --bin ci-janitor --target "$HOST"
CIJ=$OUT/$HOST/release/ci-janitor
before=()
if [[ -n ${CIJ_BEFORE_BIN:-} ]]; then
  before=(--cij-before "$CIJ_BEFORE_BIN")
elif [[ -n ${CIJ_BEFORE:-} ]]; then
  src=$OUT/before-src
  rm -rf "$src"; mkdir -p "$src"
  git archive "$CIJ_BEFORE" | tar -x -C "$src"
  log "building ci-janitor at $CIJ_BEFORE"
  (cd "$src" && RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=$OUT/before \
    cargo build --quiet --release --bin ci-janitor --target "$HOST")
  before=(--cij-before "$OUT/before/$HOST/release/ci-janitor")
fi
for t in spawn_groups environ_kill subreaper sweep_floor; do
  gcc -O2 -Wall -Wextra -o "$TOOLS/$t" "bench/$t.c"
done
gcc -O2 -Wall -Wextra -static -o "$TOOLS/run_rusage" bench/run_rusage.c 2>/dev/null \
  || gcc -O2 -Wall -Wextra -o "$TOOLS/run_rusage" bench/run_rusage.c

log "load $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" bench/sweep_ns.py outer --cij "$CIJ" --floor "$TOOLS/sweep_floor" \
  --spawner "$TOOLS/spawn_groups" --environ-kill "$TOOLS/environ_kill" \
  --run-rusage "$TOOLS/run_rusage" --subreaper "$TOOLS/subreaper" --python "$PY" \
  --workdir "$OUT" --out-md "$OUT/results-ns.md" --out-json "$OUT/results-ns.json" \
  --command-line "$(echo ${CIJ_BEFORE:+CIJ_BEFORE=$CIJ_BEFORE} ${CIJ_BEFORE_BIN:+CIJ_BEFORE_BIN=$CIJ_BEFORE_BIN} bash bench/sweep_ns.sh "$@")" \
  "${before[@]}" "$@"
