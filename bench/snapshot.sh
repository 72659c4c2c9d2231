#!/usr/bin/env bash
# Snapshot benchmark: `ci-janitor snapshot` vs ps + ss, lsof and psutil with 100, 1,000
# and 5,000 real idle processes (10% TCP listeners on 127.0.0.1, 10% unix listeners).
#
#   bash bench/snapshot.sh            # full run (15 interleaved rounds per size)
#   bash bench/snapshot.sh --quick    # 5 rounds per size
#   bash bench/snapshot.sh --sizes 100,1000 --reps 100=9,1000=9   # anything else goes to the driver
#
# Installs what it needs (lsof, iproute2, procps, gcc via apt-get; psutil via pip), builds a
# static ci-janitor into target/bench, compiles bench/spawn_idle.c and bench/run_rusage.c into
# target/bench/tools, then runs bench/snapshot_bench.py. Results: target/bench/results.md
# (the tables for BENCHMARKS.md) and target/bench/results.json (raw samples).
# Linux only; needs no network beyond the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/bench
TOOLS=$OUT/tools
PGID_FILE=$OUT/spawner.pgid
mkdir -p "$TOOLS"

driver_args=()
for a in "$@"; do
  case "$a" in
    --quick) driver_args+=(--reps 100=5,1000=5,5000=5) ;;
    *) driver_args+=("$a") ;;
  esac
done

log() { echo "[bench] $*" >&2; }

# ---- cleanup: whatever happens, the spawned process group must not outlive us -------------
live_in_group() { ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/' | wc -l; }
DRIVER_PID=
cleanup() {
  local rc=$?
  if [[ -n $DRIVER_PID ]] && kill -0 "$DRIVER_PID" 2>/dev/null; then
    # The driver stops its spawner itself on SIGTERM; give it a moment, then go on anyway.
    kill -TERM "$DRIVER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$DRIVER_PID" 2>/dev/null || break; sleep 0.1; done
  fi
  if [[ -s $PGID_FILE ]]; then
    local pgid
    pgid=$(cat "$PGID_FILE")
    if [[ $pgid =~ ^[0-9]+$ ]] && (( pgid > 1 )) && (( $(live_in_group "$pgid") > 0 )); then
      log "cleanup: kill -KILL -- -$pgid (spawned idle processes)"
      kill -KILL -- "-$pgid" 2>/dev/null || true
      for _ in $(seq 1 300); do
        (( $(live_in_group "$pgid") == 0 )) && break
        sleep 0.1
      done
      if (( $(live_in_group "$pgid") > 0 )); then
        log "cleanup: WARNING: $(live_in_group "$pgid") processes of group $pgid still alive"
        rc=1
      else
        log "cleanup: group $pgid gone"
      fi
    fi
    rm -f "$PGID_FILE"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- dependencies -------------------------------------------------------------------------
need_apt=()
command -v lsof >/dev/null || need_apt+=(lsof)
command -v ss >/dev/null || need_apt+=(iproute2)
command -v ps >/dev/null || need_apt+=(procps)
command -v gcc >/dev/null || need_apt+=(gcc libc6-dev)
if (( ${#need_apt[@]} )); then
  SUDO=; (( EUID == 0 )) || SUDO=sudo
  log "installing ${need_apt[*]} with apt-get"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# The real interpreter, not a shim (a pyenv shim adds ~100 ms per start, which no user's
# CI python has). Used both for the psutil one-shot and the python3 startup row.
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

gcc -O2 -Wall -Wextra -o "$TOOLS/spawn_idle" bench/spawn_idle.c
gcc -O2 -Wall -Wextra -o "$TOOLS/proc_cost" bench/proc_cost.c
# Static keeps the RSS floor a forked child inherits small; fall back to dynamic.
gcc -O2 -Wall -Wextra -static -o "$TOOLS/run_rusage" bench/run_rusage.c 2>/dev/null ||
  gcc -O2 -Wall -Wextra -o "$TOOLS/run_rusage" bench/run_rusage.c

log "limits: pid_max $(cat /proc/sys/kernel/pid_max), threads-max $(cat /proc/sys/kernel/threads-max), ulimit -u $(ulimit -u)"

# ---- run ----------------------------------------------------------------------------------
# In the background + wait, so that a SIGTERM/SIGINT to this script runs the traps at once.
"$PY" bench/snapshot_bench.py \
  --cij "$CIJ" --spawner "$TOOLS/spawn_idle" --runner "$TOOLS/run_rusage" --python "$PY" \
  --proc-cost "$TOOLS/proc_cost" --workdir "$OUT" --pgid-file "$PGID_FILE" \
  --out-md "$OUT/results.md" --out-json "$OUT/results.json" \
  --command-line "$(echo bash bench/snapshot.sh "$@")" \
  "${driver_args[@]}" &
DRIVER_PID=$!
wait "$DRIVER_PID"
DRIVER_PID=
log "tables written to $OUT/results.md, raw samples to $OUT/results.json"
