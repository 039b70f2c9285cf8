#!/usr/bin/env bash
# The seed demo: one LRP scaled from 1 to 300 instances on a dev cluster on this machine, until
# every instance is RUNNING with its health check passing.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x bin/trellis ] || CGO_ENABLED=0 go build -o bin/trellis ./cmd/trellis
hack/build-examples.sh bin/blobs >/dev/null
go run ./test/bench/scalebench -instances "${SCALE_INSTANCES:-300}" "$@"
