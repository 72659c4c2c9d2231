#!/usr/bin/env bash
# Sweep benchmark (issue 3): sweep 1,000 leaked processes in 100 groups, 10% ignoring
# SIGTERM, with a 1 s grace period; `ci-janitor sweep` against a psutil cleaner,
# pkill -TERM/-KILL, `lsof -ti :PORT | xargs kill -9` per port and a /proc/*/environ scan
# for RUNNER_TRACKING_ID (what the GitHub runner does). Wall time and survivors.
#
#   bash bench/sweep.sh                # 7 interleaved rounds per cleaner + 1 warm-up (~3 min)
#   bash bench/sweep.sh --subreaper    # orphans adopted and reaped at once (bench/subreaper.c),
#                                      # as under systemd or tini, instead of by this VM's pid 1
#   bash bench/sweep.sh --rounds 3     # anything else goes to bench/sweep_bench.py
#
# Installs what it needs (lsof, procps, util-linux, gcc via apt-get; psutil via pip), builds a
# static ci-janitor into target/bench-sweep, compiles bench/spawn_groups.c and
# bench/environ_kill.c into target/bench-sweep/tools, then runs bench/sweep_bench.py.
# Results: target/bench-sweep/results.md (the table for BENCHMARKS.md) and results.json.
# Linux only; root is not needed (everything killed is our own).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/bench-sweep
TOOLS=$OUT/tools
TRUTH=$OUT/current.truth
mkdir -p "$TOOLS"

driver_args=()
wrap=()
suffix=
for a in "$@"; do
  case "$a" in
    --subreaper) wrap=("$TOOLS/subreaper"); suffix=-subreaper; driver_args+=(--reaper subreaper) ;;
    *) driver_args+=("$a") ;;
  esac
done

log() { echo "[sweep-bench] $*" >&2; }

# ---- cleanup: whatever happens, nothing we spawned may outlive us -------------------------
DRIVER_PID=
PY=
cleanup() {
  local rc=$?
  if [[ -n $DRIVER_PID ]] && kill -0 "$DRIVER_PID" 2>/dev/null; then
    # The driver cleans up itself on SIGTERM; give it a moment, then go on anyway.
    kill -TERM "$DRIVER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$DRIVER_PID" 2>/dev/null || break; sleep 0.1; done
  fi
  # By identity (pid + start time) from the current round's ground truth, then anything
  # alive whose cwd is in a round directory. Never by name.
  if [[ -n $PY && -d $OUT/rounds ]]; then
    if ! "$PY" bench/sweep_bench.py --cleanup-only --cij x --spawner x --environ-kill x \
        --workdir "$OUT" --truth-file "$TRUTH"; then
      log "cleanup: WARNING: spawned processes are still alive (see above)"
      rc=1
    fi
  fi
  rm -rf "$OUT/rounds" "$TRUTH"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- dependencies -------------------------------------------------------------------------
need_apt=()
command -v lsof >/dev/null || need_apt+=(lsof)
command -v pkill >/dev/null || need_apt+=(procps)
command -v setsid >/dev/null || need_apt+=(util-linux)
command -v gcc >/dev/null || need_apt+=(gcc libc6-dev)
command -v strace >/dev/null || need_apt+=(strace)
if (( ${#need_apt[@]} )); then
  SUDO=; (( EUID == 0 )) || SUDO=sudo
  log "installing ${need_apt[*]} with apt-get"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# The real interpreter, not a pyenv shim (a shim adds ~100 ms per start).
PY=$(python3 -c 'import sys; print(sys.executable)')
if ! "$PY" -c 'import psutil' 2>/dev/null; then
  log "installing psutil with pip"
  if ! "$PY" -m pip install --quiet --disable-pip-version-check psutil; then
    # Debian's own python refuses pip (PEP 668): use a venv under target/.
    "$PY" -m venv "$OUT/venv"
    "$OUT/venv/bin/python" -m pip install --quiet --disable-pip-version-check psutil
    PY=$OUT/venv/bin/python
  fi
fi

# ---- build --------------------------------------------------------------------------------
HOST=$(rustc -vV | awk '/^host:/ {print $2}')
log "building static ci-janitor for $HOST"
# --target keeps RUSTFLAGS off proc-macros (they cannot be built with +crt-static).
RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=$OUT \
  cargo build --quiet --release --bin ci-janitor --target "$HOST"
CIJ=$OUT/$HOST/release/ci-janitor

gcc -O2 -Wall -Wextra -o "$TOOLS/spawn_groups" bench/spawn_groups.c
gcc -O2 -Wall -Wextra -o "$TOOLS/environ_kill" bench/environ_kill.c
gcc -O2 -Wall -Wextra -o "$TOOLS/subreaper" bench/subreaper.c
command -v strace >/dev/null || log "strace not found: run with --phases 0, or install strace"

log "limits: pid_max $(cat /proc/sys/kernel/pid_max), ulimit -u $(ulimit -u), ulimit -n $(ulimit -n)/$(ulimit -Hn), load $(cut -d' ' -f1-3 /proc/loadavg)"
if (( $(ulimit -u) < 3000 )) 2>/dev/null; then
  log "WARNING: ulimit -u is $(ulimit -u); 1,000 processes per round need more"
fi

# ---- run ----------------------------------------------------------------------------------
# In the background + wait, so that a SIGTERM/SIGINT to this script runs the traps at once.
"${wrap[@]}" "$PY" bench/sweep_bench.py \
  --cij "$CIJ" --spawner "$TOOLS/spawn_groups" --environ-kill "$TOOLS/environ_kill" \
  --python "$PY" --workdir "$OUT" --truth-file "$TRUTH" \
  --out-md "$OUT/results$suffix.md" --out-json "$OUT/results$suffix.json" \
  --command-line "$(echo bash bench/sweep.sh "$@")" \
  "${driver_args[@]}" &
DRIVER_PID=$!
wait "$DRIVER_PID"
DRIVER_PID=
log "tables written to $OUT/results$suffix.md, raw samples to $OUT/results$suffix.json"
