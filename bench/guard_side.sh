#!/usr/bin/env bash
# Two builds' guards side by side: both started from this shell (so the same job) over the
# same fork workload and the same background of the rest of the machine, for a busy
# machine where run-after-run figures mostly measure the background. Beside them runs
# bench/guard_floor.c, the least a guard can do (subscribe, read stat at fork and cmdline,
# environ, fd/1, fd/2 at exec, one journal write per wake-up): the floor of this machine.
#
#   CIJ_A=path/to/ci-janitor CIJ_B=path/to/other/ci-janitor bash bench/guard_side.sh
#   MARKED=1 ... (the job has RUNNER_TRACKING_ID, as under GitHub Actions)
#
# Needs bench/guard.sh's fork_rate (run it once, or: gcc -O2 -o target/bench-guard/tools/
# fork_rate bench/fork_rate.c). Prints one line: each guard's CPU (% of a core, from
# /proc/PID/schedstat), wake-ups per second (voluntary context switches), births of the
# workload's children / forks, the stop record's exec_misses, gaps and events, peak RSS;
# then the floor's CPU, wake-ups and the execs it read too late (no command line).
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-100}
SECS=${SECS:-30}
FORK_RATE=${FORK_RATE:-target/bench-guard/tools/fork_rate}
OUT=target/bench-guard/side
ENVP=(env)
[[ -n ${MARKED:-} ]] && ENVP=(env "RUNNER_TRACKING_ID=github_side-$$")
declare -A BIN=([A]=$CIJ_A [B]=$CIJ_B) G C0 V0
FLOOR_PID=
cleanup() {
  for x in A B; do
    [[ -f $OUT/$x/state.json ]] && "${BIN[$x]}" guard stop --state "$OUT/$x/state.json" 2>/dev/null || true
  done
  if [[ -n $FLOOR_PID ]]; then kill "$FLOOR_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT
for x in A B; do
  rm -rf "$OUT/$x"; mkdir -p "$OUT/$x"
  "${ENVP[@]}" "${BIN[$x]}" snapshot --state "$OUT/$x/state.json" 2>/dev/null
  "${ENVP[@]}" "${BIN[$x]}" guard start --state "$OUT/$x/state.json" 2>/dev/null
  G[$x]=$(jq -r .pid "$OUT/$x/state.guard.pid")
done
mkdir -p "$(dirname "$FORK_RATE")"
gcc -O2 -Wall -Wextra -o "$(dirname "$FORK_RATE")/guard_floor" bench/guard_floor.c
"$(dirname "$FORK_RATE")/guard_floor" "$OUT/floor.journal" &
FLOOR_PID=$!
G[F]=$FLOOR_PID
load=$(cut -d' ' -f1 /proc/loadavg)
for x in A B F; do
  C0[$x]=$(awk '{print $1}' "/proc/${G[$x]}/schedstat")
  V0[$x]=$(awk '/^voluntary_ctxt/ {print $2}' "/proc/${G[$x]}/status")
done
"${ENVP[@]}" "$FORK_RATE" "$RATE" "$SECS" > "$OUT/fork.txt" &
fpid=$!
wait "$fpid"
line="load $load${MARKED:+, marked}:"
for x in A B; do
  c1=$(awk '{print $1}' "/proc/${G[$x]}/schedstat")
  v1=$(awk '/^voluntary_ctxt/ {print $2}' "/proc/${G[$x]}/status")
  hwm=$(awk '/^VmHWM/ {print $2}' "/proc/${G[$x]}/status")
  "${BIN[$x]}" guard stop --state "$OUT/$x/state.json" 2>/dev/null
  births=$(jq -c "select(.kind == \"birth\" and .parent.pid == $fpid)" "$OUT/$x/state.journal.jsonl" | wc -l)
  stop=$(jq -c 'select(.kind == "stop") | [.exec_misses, .gaps, .events]' "$OUT/$x/state.journal.jsonl")
  pct=$(awk -v a="${C0[$x]}" -v b="$c1" -v s="$SECS" 'BEGIN {printf "%.2f", (b - a) / 1e7 / s}')
  line="$line | $x ${pct}% wake/s $(( (v1 - ${V0[$x]}) / SECS )) births $births/$(awk '{print $2}' "$OUT/fork.txt") [exec_misses,gaps,events] $stop peak $((hwm / 1024)) MiB"
done
c1=$(awk '{print $1}' "/proc/$FLOOR_PID/schedstat")
v1=$(awk '/^voluntary_ctxt/ {print $2}' "/proc/$FLOOR_PID/status")
kill "$FLOOR_PID"; wait "$FLOOR_PID" 2>/dev/null || true
FLOOR_PID=
pct=$(awk -v a="${C0[F]}" -v b="$c1" -v s="$SECS" 'BEGIN {printf "%.2f", (b - a) / 1e7 / s}')
late=$(awk '$1 == "exec" && NF < 6' "$OUT/floor.journal" | wc -l)
line="$line | floor ${pct}% wake/s $(( (v1 - ${V0[F]}) / SECS )) execs read late $late"
rm -f "$OUT"/*/state.guard.pid
echo "$line"
