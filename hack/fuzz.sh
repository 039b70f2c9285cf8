#!/usr/bin/env bash
# Runs every Fuzz target in the module for a short budget (FUZZTIME, default 10000x each).
# `go test -fuzz` takes one package and one target at a time, hence the loop.
#
# The default budget is a count of executions, not a duration: with a duration, Go's fuzz
# coordinator (go1.26 and earlier, golang/go#75804) can fail a target with a bare "context
# deadline exceeded" when the clock runs out while a worker is mid-call, with no input written.
# A count never arms that deadline. A real finding makes go write the failing input under
# testdata/fuzz and print "Failing input written"; that fails the run.
set -euo pipefail
fuzztime=${FUZZTIME:-10000x}
targets=0
while read -r f; do
  pkg=./$(dirname "${f#./}")
  for target in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed 's/^func //'); do
    targets=$((targets + 1))
    echo "fuzz: $pkg $target ($fuzztime)"
    if ! out=$(go test -run='^$' -fuzz="^${target}\$" -fuzztime="$fuzztime" "$pkg" 2>&1); then
      echo "$out"
      exit 1
    fi
    echo "$out" | tail -n 1
  done
done < <(grep -rl --include='*_test.go' '^func Fuzz' . | sort)
echo "fuzz: $targets targets passed"
