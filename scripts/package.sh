#!/usr/bin/env bash
# Builds the release asset for one target and writes the manifest the Action reads.
#
#   bash scripts/package.sh [--target TRIPLE] [--out DIR] [--dist DIR]
#
# - TRIPLE defaults to the host's (here x86_64-unknown-linux-gnu, linked with +crt-static;
#   the release workflow passes the musl targets).
# - DIR (default target/assets) receives `ci-janitor-TRIPLE` and SHA256SUMS (one
#   `sha256  asset` line per asset; an existing file is updated, so several targets can be
#   packaged into one DIR, as the release workflow does).
# - With --dist, the manifest is also written there (normally `dist/`): SHA256SUMS and
#   RELEASE (the tag `v<version>` and the repository the assets are released from). That
#   is what the tagged tree carries and what the shim verifies downloads against.
#
# The build is static or the script fails: a binary that names a dynamic loader is not an
# asset.
set -euo pipefail
cd "$(dirname "$0")/.."

repository=ci-janitor/ci-janitor
target=$(rustc -vV | sed -n 's/^host: //p')
out=target/assets
dist=
while [ $# -gt 0 ]; do
  case $1 in
    --target) target=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --dist) dist=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "package.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
target_dir=${CARGO_TARGET_DIR:-target}
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --quiet --release --locked --target "$target" --bin ci-janitor
bin=$target_dir/$target/release/ci-janitor

if readelf -l "$bin" | grep -q 'Requesting program interpreter'; then
  echo "package.sh: $bin is dynamically linked; refusing to package it" >&2
  exit 1
fi
"$bin" --version >/dev/null

asset=ci-janitor-$target
mkdir -p "$out"
cp "$bin" "$out/$asset"
chmod 0755 "$out/$asset"
sum=$(sha256sum "$out/$asset" | cut -d' ' -f1)
touch "$out/SHA256SUMS"
{ grep -v "  $asset\$" "$out/SHA256SUMS" || true; echo "$sum  $asset"; } | sort -k2 > "$out/SHA256SUMS.new"
mv "$out/SHA256SUMS.new" "$out/SHA256SUMS"

if [ -n "$dist" ]; then
  mkdir -p "$dist"
  cp "$out/SHA256SUMS" "$dist/SHA256SUMS"
  printf 'tag=v%s\nrepository=%s\n' "$version" "$repository" > "$dist/RELEASE"
fi
echo "$out/$asset ($sum), tag v$version"
