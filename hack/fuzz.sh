#!/usr/bin/env bash
# Runs every Fuzz target in the module for a short time (FUZZTIME, default 3s each).
# `go test -fuzz` takes one package and one target at a time, hence the loop.
#
# A real finding makes go write the failing input under testdata/fuzz and print "Failing input
# written"; that fails the run. Go's fuzz coordinator can also report "context deadline
# exceeded" when -fuzztime ends while a worker is still busy on a loaded machine (no input is
# written then): that is retried once rather than failing CI on the tool's own timing.
set -euo pipefail
fuzztime=${FUZZTIME:-3s}
targets=0
while read -r f; do
  pkg=./$(dirname "${f#./}")
  for target in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed 's/^func //'); do
    targets=$((targets + 1))
    for attempt in 1 2; do
      echo "fuzz: $pkg $target ($fuzztime)"
      if out=$(go test -run='^$' -fuzz="^${target}\$" -fuzztime="$fuzztime" "$pkg" 2>&1); then
        echo "$out" | tail -n 1
        break
      fi
      echo "$out"
      if [ "$attempt" = 1 ] && grep -q 'context deadline exceeded' <<<"$out" && ! grep -q 'Failing input written' <<<"$out"; then
        echo "fuzz: $target: coordinator timed out without a finding; retrying once"
        continue
      fi
      exit 1
    done
  done
done < <(grep -rl --include='*_test.go' '^func Fuzz' . | sort)
echo "fuzz: $targets targets passed"
