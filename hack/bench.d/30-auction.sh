#!/usr/bin/env bash
# Auctioneer throughput, two ways, each next to its peer measured in the same run:
# - the pure auction: 10,000 instances over 1,000 cells in one batch (brain/auction's
#   BenchmarkAuction) against the straightforward implementation of the same algorithm
#   (BenchmarkAuctionReference). DESIGN's target: well over 50,000/s.
# - the running brain: a DesiredLRP of 2,000 instances placed end to end through a real BBS
#   over mutual TLS (brain's BenchmarkBrainPlacement) against the same placements written
#   straight through the BBS client by as many concurrent writers (BenchmarkDirectPlacementWrites),
#   the ceiling the brain can approach.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(go test -run '^$' -bench '^BenchmarkAuction(Reference)?$' -benchtime "${AUCTION_BENCHTIME:-5x}" ./brain/auction)
e2e=$(go test -run '^$' -bench '^Benchmark(BrainPlacement|DirectPlacementWrites)$' -benchtime "${BRAIN_BENCHTIME:-3x}" ./brain)
rate() { awk -v name="$1" '$1 ~ "^"name"(-[0-9]+)?$" { for (i = 1; i < NF; i++) if ($(i+1) == "placements/s") print $i }'; }
ours=$(rate BenchmarkAuction <<<"$out")
peer=$(rate BenchmarkAuctionReference <<<"$out")
brain=$(rate BenchmarkBrainPlacement <<<"$e2e")
direct=$(rate BenchmarkDirectPlacementWrites <<<"$e2e")
if [ -z "$ours" ] || [ -z "$peer" ] || [ -z "$brain" ] || [ -z "$direct" ]; then
  echo "auction: benchmark output not understood:" >&2
  echo "$out" >&2
  echo "$e2e" >&2
  exit 1
fi
echo "auction: 10,000 instances over 1,000 cells"
awk -v o="$ours" -v p="$peer" 'BEGIN {
  printf "  trellis auction        %10.0f placements/s (%.1f ms per batch)\n", o, 10000 / o * 1000
  printf "  reference (naive scan) %10.0f placements/s  -> trellis is %.1fx\n", p, o / p
  printf "  target                      50000 placements/s  -> trellis is %.1fx\n", o / 50000
}'
echo "brain: 2,000 instances over 20 cells through the BBS (mutual TLS, embedded etcd)"
awk -v o="$brain" -v p="$direct" 'BEGIN {
  printf "  running brain, end to end  %8.0f placements/s\n", o
  printf "  direct CAS writes (peer)   %8.0f placements/s  -> brain reaches %.0f%% of it\n", p, o / p * 100
}'
