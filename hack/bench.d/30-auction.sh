#!/usr/bin/env bash
# Auctioneer throughput: 10,000 instances over 1,000 cells in one batch (brain/auction's
# BenchmarkAuction), next to the straightforward implementation of the same algorithm
# (BenchmarkAuctionReference) measured in the same run. DESIGN's target: well over 50,000/s.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(go test -run '^$' -bench '^BenchmarkAuction(Reference)?$' -benchtime "${AUCTION_BENCHTIME:-5x}" ./brain/auction)
rate() { awk -v name="$1" '$1 ~ "^"name"(-[0-9]+)?$" { for (i = 1; i < NF; i++) if ($(i+1) == "placements/s") print $i }' <<<"$out"; }
ours=$(rate BenchmarkAuction)
peer=$(rate BenchmarkAuctionReference)
if [ -z "$ours" ] || [ -z "$peer" ]; then
  echo "auction: benchmark output not understood:" >&2
  echo "$out" >&2
  exit 1
fi
echo "auction: 10,000 instances over 1,000 cells"
awk -v o="$ours" -v p="$peer" 'BEGIN {
  printf "  trellis auction        %10.0f placements/s (%.1f ms per batch)\n", o, 10000 / o * 1000
  printf "  reference (naive scan) %10.0f placements/s  -> trellis is %.1fx\n", p, o / p
  printf "  target                      50000 placements/s  -> trellis is %.1fx\n", o / 50000
}'
