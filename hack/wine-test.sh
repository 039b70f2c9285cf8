#!/usr/bin/env bash
# Runs the Windows tests under wine: first the isolation_windows test binary (the process-mode
# job object conformance subset, the process-tree and net-info tests and the windows-only
# translation round trips), then the end-to-end tests of test/mixedfleet (a mixed fleet with
# trellis.exe as a Windows cell, and the MSI installed, upgraded and removed under wine).
#
#   hack/wine-test.sh [extra go test flags for the isolation_windows test binary, e.g.
#                      -test.run=Conformance -test.v; given flags skip the end-to-end tests]
#   TRELLIS_WINE_E2E=0 hack/wine-test.sh   # the isolation_windows tests only
#   TRELLIS_WINE_E2E_RUN=MSI hack/wine-test.sh   # -run for the end-to-end tests
#
# Idempotent setup: installs wine64 and the mingw-w64 cross compiler with apt when missing
# (apt-get update at most once), builds the bcryptprimitives.dll stand-in that Go >= 1.24
# Windows binaries need under wine (hack/wine/bcryptprimitives.c) into a wine prefix under
# $TRELLIS_WINE_CACHE (default ~/.cache/trellis-wine), pre-starts wineserver, then cross-builds
# the test binary with `GOOS=windows go test -c` and runs it. The exit status is the test's.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${TRELLIS_WINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trellis-wine}
export WINEPREFIX="$cache/prefix"
export WINEDEBUG=${WINEDEBUG:--all}
export WINEARCH=win64
# No display: never let wine try to open windows or install mono/gecko.
export DISPLAY=
export WINEDLLOVERRIDES="mscoree,mshtml="

log() { echo "wine-test: $*" >&2; }

packages=(wine64 gcc-mingw-w64-x86-64-win32)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    log "need root to install: ${missing[*]}"
    exit 1
  fi
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

wine=/usr/lib/wine/wine64
wineserver=/usr/lib/wine/wineserver
[ -x "$wine" ] || wine=$(command -v wine64 || command -v wine)
[ -x "$wineserver" ] || wineserver=$(command -v wineserver)

mkdir -p "$cache"
dll="$cache/bcryptprimitives.dll"
src="$repo/hack/wine/bcryptprimitives.c"
if [ ! -f "$dll" ] || [ "$src" -nt "$dll" ]; then
  log "building $dll"
  x86_64-w64-mingw32-gcc -shared -O2 -o "$dll.tmp" "$src" -lbcrypt
  mv "$dll.tmp" "$dll"
fi

# Create the prefix once (wineboot -i takes ~10 s the first time), then keep the DLL current.
sys32="$WINEPREFIX/drive_c/windows/system32"
if [ ! -d "$sys32" ]; then
  log "creating wine prefix $WINEPREFIX"
  "$wine" wineboot -i >/dev/null 2>&1 || true
  "$wineserver" -w
fi
cmp -s "$dll" "$sys32/bcryptprimitives.dll" || cp "$dll" "$sys32/bcryptprimitives.dll"

# A persistent wineserver makes each wine start ~20 ms instead of seconds. Its output must not
# be on a pipe anyone waits for.
"$wineserver" -p >/dev/null 2>&1 </dev/null &

bindir="$cache/bin"
mkdir -p "$bindir"
test_exe="$bindir/isolation_windows.test.exe"
log "building the Windows test binary"
(cd "$repo" && GOOS=windows GOARCH=amd64 go test -c -o "$test_exe" ./isolation_windows)

# The tests build their helper program themselves only when they can run go; under wine they
# cannot, so build it here and pass its path.
helper="$bindir/trellis-wintestprog.exe"
(cd "$repo" && GOOS=windows GOARCH=amd64 go build -o "$helper" ./isolation_windows/internal/wintestprog)

# Tests keep their temporary files under a cache directory the script empties; os.RemoveAll
# does not work under wine, so the tests clean up best-effort only.
work="$cache/work"
rm -rf "$work"
mkdir -p "$work"
export TRELLIS_WINE_HELPER="Z:${helper//\//\\}"
export TRELLIS_WINE_WORKDIR="Z:${work//\//\\}"
export TRELLIS_WINE=1

# The untagged translation tests run on Linux (go test ./isolation_windows/...); under wine
# only the tests that need Windows APIs run, unless flags choose otherwise.
e2e=${TRELLIS_WINE_E2E:-1}
if [ $# -eq 0 ]; then
  set -- -test.run='^(TestConformanceProcessMode|TestProcessTreeDiesWithContainer|TestDiskLimitProcessMode|TestDocumentsMatchHcsshimTypes|TestProcessModeNetInfo)$' -test.v
else
  e2e=0
fi
log "running the Windows tests under wine"
start=$(date +%s)
status=0
(cd "$repo/isolation_windows" && "$wine" "$test_exe" -test.timeout=5m "$@") || status=$?
log "done in $(( $(date +%s) - start )) s, exit status $status"
rm -rf "$work"

# The end-to-end tests run on Linux and start trellis.exe (and msiexec) under this prefix.
if [ "$e2e" != 0 ]; then
  log "running the mixed-fleet and MSI end-to-end tests (test/mixedfleet)"
  start=$(date +%s)
  e2e_status=0
  (cd "$repo" && TRELLIS_WINE_BIN="$wine" TRELLIS_WINESERVER="$wineserver" \
    go test -count=1 -timeout 8m -v -run "${TRELLIS_WINE_E2E_RUN:-.}" ./test/mixedfleet/) || e2e_status=$?
  log "end-to-end tests done in $(( $(date +%s) - start )) s, exit status $e2e_status"
  [ $status -ne 0 ] || status=$e2e_status
fi
exit $status
