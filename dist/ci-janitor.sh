#!/bin/sh
# Finds a verified ci-janitor binary for this runner and runs it. POSIX sh and coreutils
# (or busybox) only, so it also works in container images without node or bash.
#
#   sh ci-janitor.sh ARGS...                      exec the binary with ARGS
#   sh ci-janitor.sh --locate [--platform OS/ARCH]
#                        print `ci-janitor-bin=PATH` (the node shims spawn it themselves)
#
# Where the binary comes from, first found:
# 1. $CI_JANITOR_BIN (a preinstalled copy on a self-hosted runner; tests).
# 2. The tool cache, $RUNNER_TOOL_CACHE/ci-janitor/VERSION/ARCH/ci-janitor, verified again.
# 3. This tree's release asset, downloaded from
#    $GITHUB_SERVER_URL/OWNER/REPO/releases/download/TAG/ASSET, verified against the
#    SHA256SUMS next to this script, then cached. TAG is this tree's (RELEASE), never the
#    ref the workflow pinned: `@v1`, `@v1.2.3` and `@<sha>` all get their own version.
#
# Exit status: the binary's, else 1 when no verified binary can be had (fail closed; with
# the input on-missing-binary: warn, a warning and 0), or 0 with a warning on a platform
# ci-janitor does not support. A checksum mismatch is always an error.
set -u

here=$(cd "$(dirname "$0")" && pwd)
locate=
platform=
if [ "${1:-}" = --locate ]; then
  locate=1
  shift
  if [ "${1:-}" = --platform ]; then platform=$2; shift 2; fi
fi

escape() { printf '%s' "$1" | sed -e 's/%/%25/g' | awk 'BEGIN{ORS=""} NR>1{print "%0A"} {print}'; }
annotate() { printf '::%s title=ci-janitor::%s\n' "$1" "$(escape "$2")"; }

# In --locate mode, prints the binary's path and ends; else returns (the caller execs).
located() {
  if [ -n "$locate" ]; then
    printf 'ci-janitor-bin=%s\n' "$1"
    exit 0
  fi
}

# $1: why. Fails the step unless the workflow chose a warning.
missing() {
  mode=$(printf '%s' "${INPUT_ON_MISSING_BINARY:-${CI_JANITOR_ON_MISSING_BINARY:-fail}}" | tr 'A-Z' 'a-z')
  if [ "$mode" = warn ]; then
    annotate warning "ci-janitor did not run: $1 (on-missing-binary: warn lets the job go on unchecked)"
    exit 0
  fi
  annotate error "ci-janitor cannot run: $1. Make the release host reachable from this runner, or install ci-janitor and set CI_JANITOR_BIN to it, or set the input on-missing-binary: warn to run the job without it."
  exit 1
}

sha256() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  elif command -v shasum >/dev/null 2>&1; then shasum -a 256 "$1" | cut -d' ' -f1
  elif command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 "$1" | sed 's/.*= *//'
  else return 1
  fi
}

if [ -n "${CI_JANITOR_BIN:-}" ]; then
  located "$CI_JANITOR_BIN"
  exec "$CI_JANITOR_BIN" "$@"
fi

if [ -z "$platform" ]; then
  case $(uname -s) in Linux) os=linux ;; Darwin) os=darwin ;; *) os=$(uname -s) ;; esac
  case $(uname -m) in x86_64|amd64) arch=x64 ;; aarch64|arm64) arch=arm64 ;; *) arch=$(uname -m) ;; esac
  platform=$os/$arch
fi
case $platform in
  linux/x64) cpu=x86_64 ;;
  linux/arm64) cpu=aarch64 ;;
  *)
    annotate warning "ci-janitor does not run on $platform; this step does nothing"
    exit 0 ;;
esac

tag=$(sed -n 's/^tag=//p' "$here/RELEASE" 2>/dev/null)
repository=${GITHUB_ACTION_REPOSITORY:-}
[ -n "$repository" ] || repository=$(sed -n 's/^repository=//p' "$here/RELEASE" 2>/dev/null)
# The manifest decides which asset serves this CPU: musl in releases, any static build in
# a test. The first `ci-janitor-CPU-unknown-linux-*` line wins.
line=$(grep -E "^[0-9a-f]{64}  \\*?ci-janitor-$cpu-unknown-linux-[a-z]+\$" "$here/SHA256SUMS" 2>/dev/null | head -n 1)
if [ -z "$tag" ] || [ -z "$line" ]; then
  missing "this copy of the action lists no release binary for $platform (dist/RELEASE, dist/SHA256SUMS); it is a source checkout, not a release"
fi
want=${line%% *}
asset=${line##* }
asset=${asset#\*}

cache=${RUNNER_TOOL_CACHE:-${RUNNER_TEMP:-${TMPDIR:-/tmp}}}/ci-janitor/${tag#v}/$cpu
bin=$cache/ci-janitor
if [ -x "$bin" ] && [ "$(sha256 "$bin")" = "$want" ]; then
  located "$bin"
  exec "$bin" "$@"
fi

url=${GITHUB_SERVER_URL:-https://github.com}/$repository/releases/download/$tag/$asset
mkdir -p "$cache" 2>/dev/null || missing "cannot create the tool cache directory $cache"
part=$(mktemp "$cache/download.XXXXXX") || missing "cannot write to the tool cache $cache"
trap 'rm -f "$part"' EXIT
if command -v curl >/dev/null 2>&1; then
  curl -fsSL --retry 2 --connect-timeout 10 --max-time 120 -o "$part" "$url" 2>"$part.err"
elif command -v wget >/dev/null 2>&1; then
  wget -q -T 30 -O "$part" "$url" 2>"$part.err"
else
  missing "neither curl nor wget is installed to download $url"
fi
status=$?
err=$(cat "$part.err" 2>/dev/null); rm -f "$part.err"
[ $status -eq 0 ] || missing "downloading $url failed ($err)"
got=$(sha256 "$part") || missing "no sha256sum, shasum or openssl to verify $asset"
if [ "$got" != "$want" ]; then
  annotate error "checksum mismatch for $url: expected $want (dist/SHA256SUMS), got $got. Refusing to run it."
  exit 1
fi
chmod 0755 "$part" && mv -f "$part" "$bin" || missing "cannot install $asset into $cache"
trap - EXIT
echo "ci-janitor: verified $asset ($tag, sha256 $want), cached in $cache"
located "$bin"
exec "$bin" "$@"
