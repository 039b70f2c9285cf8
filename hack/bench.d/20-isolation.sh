#!/usr/bin/env bash
# Container start cost of the Linux isolation backend next to runc and crun, same run, same
# busybox rootfs. Needs root, busybox-static, runc and crun (hack/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$(uname -s)" != Linux ] || [ "$(id -u)" != 0 ]; then
  echo "isolation: skipped (needs root on Linux)"
  exit 0
fi
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
CGO_ENABLED=0 go build -o "$bin/trellis" ./cmd/trellis
go build -o "$bin/isolation-bench" ./isolation_linux/bench
"$bin/isolation-bench" -init "$bin/trellis" -n "${ISOLATION_BENCH_RUNS:-50}"
