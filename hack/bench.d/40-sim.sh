#!/usr/bin/env bash
# The scale simulator at a small size (200 cells, 10,000 instances): fill, cell loss, drain and
# churn against the real BBS, etcd and brain, next to Diego's, Nomad's and Kubernetes' figures.
# make bench-sim runs it at 1,000 cells; docs/scale.md records a run.
set -euo pipefail
cd "$(dirname "$0")/../.."
go run ./test/sim/simbench -cells 200 -instances 10000 -churn 20s "$@" 2>/dev/null
