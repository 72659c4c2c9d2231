#!/usr/bin/env bash
# `ci-janitor snapshot` (and `guard start` + `guard stop`) inside a fresh PID namespace
# (`unshare --pid --fork --mount-proc`, as a container job runs) with N idle processes:
# the proc connector sends no events into a nested PID namespace, and nothing may wait for
# them (issue 14: under 100 ms at N = 100).
#
#   bash bench/snapshot_ns.sh                 # N = 100, 7 rounds
#   N=1000 ROUNDS=5 bash bench/snapshot_ns.sh
#   CIJ_BIN=path/to/ci-janitor bash bench/snapshot_ns.sh   # a build already made
#
# Each round: a new namespace, N `sleep` processes, then each command timed by
# bench/run_rusage (fork + exec + wait, peak RSS). Prints one line per round and the
# medians. Linux, root (unshare). Nothing outlives a round: the namespace's pid 1 is the
# round's shell, and the kernel kills what is left when it exits.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/bench-snapshot-ns
N=${N:-100}
ROUNDS=${ROUNDS:-7}
mkdir -p "$OUT"
chmod 700 "$OUT"
HOST=$(rustc -vV | awk '/^host:/ {print $2}')
if [[ -n ${CIJ_BIN:-} ]]; then
  CIJ=$CIJ_BIN
else
  echo "[snapshot-ns] building static ci-janitor for $HOST" >&2
  RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=$OUT \
    cargo build --quiet --release --bin ci-janitor --target "$HOST"
  CIJ=$OUT/$HOST/release/ci-janitor
fi
gcc -O2 -Wall -Wextra -o "$OUT/run_rusage" bench/run_rusage.c

rows=$OUT/rows.txt
: > "$rows"
for ((r = 1; r <= ROUNDS; r++)); do
  unshare --pid --fork --mount-proc bash -c '
    set -e
    for ((i = 0; i < '"$N"'; i++)); do sleep 1000 & done
    S='"$OUT"'/ns-state-$$.json
    snap=$('"$OUT"'/run_rusage '"$CIJ"' snapshot --state "$S")
    start=$('"$OUT"'/run_rusage '"$CIJ"' guard start --state "$S")
    stop=$('"$OUT"'/run_rusage '"$CIJ"' guard stop --state "$S")
    procs=$(ls -d /proc/[0-9]* | wc -l)
    echo "$snap $start $stop $procs"
    rm -f "${S%.json}".*
    kill $(jobs -p) 2>/dev/null || true
  ' >> "$rows"
done
awk -v n="$N" '
  { snap[NR] = $1 / 1e6; start[NR] = $4 / 1e6; stop[NR] = $7 / 1e6; rss[NR] = $2 / 1024;
    procs = $10
    printf "round %d: snapshot %.1f ms (%.1f MiB), guard start %.1f ms, guard stop %.1f ms; %d processes in the namespace\n",
      NR, snap[NR], rss[NR], start[NR], stop[NR], procs }
  function median(a, k,   i, j, t, b) {
    for (i = 1; i <= k; i++) b[i] = a[i]
    for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (b[j] < b[i]) { t = b[i]; b[i] = b[j]; b[j] = t }
    return k % 2 ? b[(k + 1) / 2] : (b[k / 2] + b[k / 2 + 1]) / 2
  }
  END {
    printf "N = %d idle processes, %d rounds: snapshot median %.1f ms (min %.1f), guard start %.1f ms, guard stop %.1f ms, snapshot peak RSS %.1f MiB (median)\n",
      n, NR, median(snap, NR), min(snap, NR), median(start, NR), median(stop, NR), median(rss, NR)
  }
  function min(a, k,   i, m) { m = a[1]; for (i = 2; i <= k; i++) if (a[i] < m) m = a[i]; return m }
' "$rows"
