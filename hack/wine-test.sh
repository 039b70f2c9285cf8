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
# $TRELLIS_WINE_CACHE (default ~/.cache/trellis-wine), then cross-builds the test binary with
# `GOOS=windows go test -c` and runs it. The exit status is the tests'.
#
# The wineserver: every run kills the one a previous run may have left for the prefix (an old
# server once kept the mixed-fleet test's agent from starting at all), starts its own
# persistent one, warms it up (the first wine process boots the prefix, and CreateProcess
# failed with "Internal error" while its services were still starting) and ends it on
# exit. Runs that share the prefix wait for each other. The only retries, each announced as a
# WINE START-UP HICCUP: a server that does not come up, and the isolation_windows binary when
# wine's CreateProcess failed with "Internal error"; any other failure is the tests'.
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
# One run at a time per prefix: each run kills the prefix's server at start and at exit.
exec 9>"$cache/lock"
if ! flock -n 9; then
  log "another run uses $WINEPREFIX; waiting for it (up to 30 min)"
  flock -w 1800 9 || { log "gave up waiting for $cache/lock"; exit 1; }
fi

# stop_server ends the prefix's wineserver and every wine process in it, and waits for that.
stop_server() {
  "$wineserver" -k >/dev/null 2>&1 || true
  "$wineserver" -w >/dev/null 2>&1 || true
}

# The services wine starts when it boots a prefix (those with Start=2 in a wine 8 prefix).
boot_services=(PlugPlay Eventlog MountMgr nsiproxy NDIS)

# service_settled NAME: whether the service manager is done starting the prefix's service NAME:
# it is RUNNING, or STOPPED after a start was tried (a failure is logged), or it does not exist
# in this wine version. START_PENDING and "never started" (1077) are not settled.
service_settled() {
  local out state code
  # Through a file: a wine process can hand a pipe to services it starts, which keep it open.
  timeout 30 "$wine" sc query "$1" >"$cache/sc.out" 2>&1 </dev/null || true
  out=$(<"$cache/sc.out")
  case $out in *FAILED*1060*|*"does not exist"*) return 0 ;; esac
  state=$(sed -n 's/^ *STATE *: *[0-9]* *\([A-Z_]*\).*/\1/p' <<<"$out" | tr -d '\r')
  code=$(sed -n 's/^ *WIN32_EXIT_CODE *: *\([0-9]*\).*/\1/p' <<<"$out" | tr -d '\r')
  case $state in
    RUNNING) return 0 ;;
    STOPPED) [ "$code" != 1077 ] || return 1
      log "wine's $1 service stopped with exit code $code (not waited for)"
      return 0 ;;
  esac
  return 1
}

# start_server starts a persistent wineserver for the prefix (so each wine start takes ~20 ms,
# not seconds) and waits until it is ready: a first process has run (which boots the prefix),
# the services wine starts at boot have settled, and one more process starts. Its output and
# that of the services must not be on a pipe anyone waits for.
start_server() {
  "$wineserver" -p >/dev/null 2>&1 </dev/null
  local started=$SECONDS s
  timeout 120 "$wine" cmd /c exit 0 >/dev/null 2>&1 </dev/null || return 1
  for s in "${boot_services[@]}"; do
    until service_settled "$s"; do
      if (( SECONDS - started > 60 )); then
        log "wine's $s service has not started after 60 s: $(tr -s ' \r\n' ' ' <"$cache/sc.out")"
        return 1
      fi
      sleep 0.2
    done
  done
  timeout 60 "$wine" cmd /c exit 0 >/dev/null 2>&1 </dev/null || return 1
  log "wineserver ready in $(( SECONDS - started )) s"
}

# restart_server replaces the prefix's wineserver with a fresh, warmed-up one; a server that
# does not come up is a wine start-up hiccup and gets two more tries, each announced.
restart_server() {
  local attempt
  for attempt in 1 2 3; do
    stop_server
    start_server && return 0
    log "WINE START-UP HICCUP: the wineserver for $WINEPREFIX did not come up (attempt $attempt of 3)"
  done
  log "the wineserver for $WINEPREFIX did not come up in 3 attempts"
  return 1
}

# A server left by an earlier run (or an older version of this script) goes first.
stop_server
trap stop_server EXIT

dll="$cache/bcryptprimitives.dll"
src="$repo/hack/wine/bcryptprimitives.c"
if [ ! -f "$dll" ] || [ "$src" -nt "$dll" ]; then
  log "building $dll"
  x86_64-w64-mingw32-gcc -shared -O2 -o "$dll.tmp" "$src" -lbcrypt
  mv "$dll.tmp" "$dll"
fi

# Create the prefix once (wineboot -i takes ~10 s the first time), then keep the DLL current.
# A prefix whose creation did not finish (no marker) is made again from scratch.
sys32="$WINEPREFIX/drive_c/windows/system32"
ready="$WINEPREFIX/.trellis-prefix-ready"
if [ ! -f "$ready" ]; then
  log "creating wine prefix $WINEPREFIX"
  rm -rf "$WINEPREFIX"
  "$wine" wineboot -i >/dev/null 2>&1 </dev/null || true
  "$wineserver" -w
  if [ ! -d "$sys32" ]; then
    log "wineboot -i did not create $sys32"
    exit 1
  fi
  touch "$ready"
fi
cmp -s "$dll" "$sys32/bcryptprimitives.dll" || cp "$dll" "$sys32/bcryptprimitives.dll"

restart_server

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
# run_tests runs the test binary with its output in a file (wine's processes may hold a pipe
# open after the binary exits), then prints it.
out="$cache/isolation_windows.out"
run_tests() {
  local rc=0
  (cd "$repo/isolation_windows" && "$wine" "$test_exe" -test.timeout=5m "$@") >"$out" 2>&1 </dev/null || rc=$?
  cat "$out"
  return $rc
}
log "running the Windows tests under wine"
start=$(date +%s)
status=0
run_tests "$@" || status=$?
# wine's CreateProcess now and then fails with ERROR_INTERNAL_ERROR ("Internal error."): seen
# on a cold server, and once in 10 runs in the middle of the suite on a warm one. That is wine
# failing to start a process, not the backend: run the binary once more on a fresh server, and
# say so. Nothing else is retried.
if [ $status -ne 0 ] && grep -q 'CreateProcess .*: Internal error\.' "$out"; then
  log "WINE START-UP HICCUP: the Windows tests failed with wine's 'Internal error' (exit status $status);"
  log "WINE START-UP HICCUP: running them once more on a fresh wineserver"
  restart_server
  rm -rf "$work"
  mkdir -p "$work"
  status=0
  run_tests "$@" || status=$?
fi
rm -f "$out" "$cache/sc.out"
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
