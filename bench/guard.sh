#!/usr/bin/env bash
# Guard overhead: CPU time and peak memory of the guard over a steady fork workload,
# against the polling loop a user would write instead (`ps` every 100 ms).
#
#   bash bench/guard.sh                    # 100 forks/s for 60 s, five runs in a row (~5.5 min)
#   RATE=200 SECS=20 bash bench/guard.sh   # another rate or length
#   RUNS="connector marked" bash bench/guard.sh   # some of the runs only
#   CIJ_BIN=path/to/ci-janitor bash bench/guard.sh  # a build already made (another commit)
#
# The workload is bench/fork_rate.c: RATE children per second on an absolute schedule, each
# a fork, an exec of /bin/true and an exit, started from this script (so they are the job's:
# the guard reads /proc for each). Runs, one after the other, each for SECS seconds:
#   0. `ci-janitor guard start` with no workload (the machine's own background)
#   1. `ci-janitor guard start` (netlink proc connector)   + the workload
#   1b. the same with RUNNER_TRACKING_ID set for the job (environ read at outside execs)
#   2. `ci-janitor guard start --poll` (polling /proc)     + the workload
#   3. a bash loop of `ps -eo pid,ppid,pgid,sid,lstart,args; sleep 0.1` + the workload
# Guard CPU is read from /proc/PID/schedstat (ns on CPU) before and after the workload, its
# peak memory is VmHWM; the ps loop runs under GNU time (user+sys and max RSS, children
# included). Results: target/bench-guard/results.md. Linux, root (SO_RCVBUFFORCE, nice).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/bench-guard
TOOLS=$OUT/tools
RATE=${RATE:-100}
SECS=${SECS:-60}
mkdir -p "$TOOLS"
log() { echo "[bench] $*" >&2; }

need_apt=()
command -v ps >/dev/null || need_apt+=(procps)
command -v gcc >/dev/null || need_apt+=(gcc libc6-dev)
command -v jq >/dev/null || need_apt+=(jq)
[[ -x /usr/bin/time ]] || need_apt+=(time)
if (( ${#need_apt[@]} )); then
  SUDO=; (( EUID == 0 )) || SUDO=sudo
  log "installing ${need_apt[*]} with apt-get"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

HOST=$(rustc -vV | awk '/^host:/ {print $2}')
if [[ -n ${CIJ_BIN:-} ]]; then
  CIJ=$CIJ_BIN  # a build already made (another commit's, to compare)
else
  log "building static ci-janitor for $HOST"
  RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=$OUT \
    cargo build --quiet --release --bin ci-janitor --target "$HOST"
  CIJ=$OUT/$HOST/release/ci-janitor
fi
gcc -O2 -Wall -Wextra -o "$TOOLS/fork_rate" bench/fork_rate.c

# ---- cleanup: a guard or a ps loop must not outlive us -----------------------------------
GUARD_STATE=
LOOP_PID=
cleanup() {
  local rc=$?
  if [[ -n $GUARD_STATE ]]; then "$CIJ" guard stop --state "$GUARD_STATE" 2>/dev/null || true; fi
  if [[ -n $LOOP_PID ]]; then kill "$LOOP_PID" 2>/dev/null || true; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cpu_ns() { awk '{print $1}' "/proc/$1/schedstat"; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

ROWS=()
run_guard() {  # $1: label, $2: extra guard args, $3: "idle" for no workload, $4: "marked"
  local dir=$OUT/$1
  rm -rf "$dir"; mkdir -p "$dir"
  GUARD_STATE=$dir/state.json
  # "marked": the job has an identity marker (as under GitHub Actions), so the guard also
  # reads /proc/PID/environ at every exec of a process outside the job, to adopt the ones
  # that carry the marker.
  local -a job_env=()
  [[ ${4:-} == marked ]] && job_env=(env "RUNNER_TRACKING_ID=github_bench-$$")
  "${job_env[@]}" "$CIJ" snapshot --state "$GUARD_STATE" 2>/dev/null
  "${job_env[@]}" "$CIJ" guard start --state "$GUARD_STATE" $2 2>"$dir/start.txt"
  local gpid; gpid=$(jq -r .pid "$dir/state.guard.pid")
  local mode; mode=$(jq -r .mode "$dir/state.guard.pid")
  local c0; c0=$(cpu_ns "$gpid")
  local t0; t0=$(date +%s%N)
  local fpid=0
  if [[ ${3:-} == idle ]]; then
    sleep "$SECS"; echo "forks 0" > "$dir/fork.txt"
  else
    # Under a marked job the workload carries the marker too, as every step's process does.
    "${job_env[@]}" "$TOOLS/fork_rate" "$RATE" "$SECS" > "$dir/fork.txt" &
    fpid=$!
    wait "$fpid"
  fi
  local t1; t1=$(date +%s%N)
  local c1; c1=$(cpu_ns "$gpid")
  local hwm; hwm=$(hwm_kib "$gpid")
  "$CIJ" guard stop --state "$GUARD_STATE" 2>/dev/null
  GUARD_STATE=
  local forks; forks=$(awk '{print $2}' "$dir/fork.txt")
  local births; births=$(jq -c "select(.kind == \"birth\" and .parent.pid == $fpid)" \
    "$dir/state.journal.jsonl" | wc -l)
  local events; events=$(jq -r 'select(.kind == "stop") | .events' "$dir/state.journal.jsonl")
  local cpu_s; cpu_s=$(awk -v a="$c0" -v b="$c1" 'BEGIN {printf "%.3f", (b - a) / 1e9}')
  local wall_s; wall_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", (b - a) / 1e9}')
  local pct; pct=$(awk -v c="$cpu_s" -v w="$wall_s" 'BEGIN {printf "%.2f", 100 * c / w}')
  local mib; mib=$(awk -v k="$hwm" 'BEGIN {printf "%.1f", k / 1024}')
  log "$1 ($mode): cpu ${cpu_s}s over ${wall_s}s = ${pct}% of a core, peak ${mib} MiB, $births/$forks births, $events events"
  local what="guard, $mode"; [[ ${3:-} == idle ]] && what="guard, $mode, **no workload**"
  local how="ci-janitor guard start $2"
  if [[ ${4:-} == marked ]]; then
    what="$what, job marked"; how="RUNNER_TRACKING_ID=… ci-janitor guard start $2"
  fi
  ROWS+=("| $what | \`$how\` | $cpu_s | $wall_s | **$pct%** | **$mib** | $births / $forks | $events |")
}

run_ps_loop() {
  local dir=$OUT/ps-loop
  rm -rf "$dir"; mkdir -p "$dir"
  /usr/bin/time -o "$dir/time.txt" -f "%e %U %S %M" bash -c \
    "for ((i = 0; i < $SECS * 10; i++)); do ps -eo pid,ppid,pgid,sid,lstart,args > /dev/null; sleep 0.1; done" &
  LOOP_PID=$!
  "$TOOLS/fork_rate" "$RATE" "$SECS" > "$dir/fork.txt"
  wait "$LOOP_PID"
  LOOP_PID=
  read -r wall user sys maxkib < "$dir/time.txt"
  local cpu_s; cpu_s=$(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.3f", u + s}')
  local pct; pct=$(awk -v c="$cpu_s" -v w="$wall" 'BEGIN {printf "%.2f", 100 * c / w}')
  local mib; mib=$(awk -v k="$maxkib" 'BEGIN {printf "%.1f", k / 1024}')
  local loops=$(( SECS * 10 ))
  log "ps loop: cpu ${cpu_s}s over ${wall}s = ${pct}% of a core, peak ${mib} MiB"
  ROWS+=("| ps loop, 100 ms | \`ps -eo pid,ppid,pgid,sid,lstart,args; sleep 0.1\` in bash (~$loops rounds) | $cpu_s | $wall | **$pct%** | **$mib** | — (sees what lives at each tick) | — |")
}

LOAD0=$(cut -d" " -f1-3 /proc/loadavg)
RUNS=${RUNS:-idle connector marked polling ps}
log "workload: $RATE forks/s (fork + exec /bin/true + exit) for $SECS s, runs: $RUNS"
for r in $RUNS; do
  case $r in
    idle) run_guard connector "" idle ;;
    connector) run_guard connector "" ;;
    marked) run_guard connector-marked "" "" marked ;;
    polling) run_guard polling "--poll" ;;
    ps) run_ps_loop ;;
    *) log "unknown run $r (idle, connector, marked, polling, ps)"; exit 2 ;;
  esac
done

{
  echo "Command: \`bash bench/guard.sh\` (RATE=$RATE, SECS=$SECS)"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- nproc: $(nproc), CPU: $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), memory: $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "- kernel: $(uname -r) ($(uname -m)); load average before the runs: $LOAD0"
  echo "- ci-janitor: $("$CIJ" --version) (${CIJ_BIN:-static release build, commit $(git rev-parse --short HEAD)})"
  echo "- ps: $(ps --version | head -1)"
  echo
  echo "| approach | command | CPU s | wall s | CPU, % of one core | peak RSS MiB | job births journaled / forks | events handled (whole machine) |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|"
  printf '%s\n' "${ROWS[@]}"
} > "$OUT/results.md"
log "table written to $OUT/results.md"
cat "$OUT/results.md"
