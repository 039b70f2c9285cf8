#!/usr/bin/env bash
# Prints the performance figures of each component next to its named peer, measured in this run.
set -euo pipefail
echo "trellis benchmarks on $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
for b in hack/bench.d/*.sh; do
  [ -e "$b" ] || continue
  echo
  bash "$b"
done
