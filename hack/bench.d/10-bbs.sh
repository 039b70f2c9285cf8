#!/usr/bin/env bash
# BBS throughput and latency over HTTPS+mTLS, next to the same etcd used directly.
set -euo pipefail
go run ./test/bench/bbsbench "$@"
