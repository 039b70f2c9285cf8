#!/usr/bin/env bash
# Dependencies point one way: bbs and brain never import an isolation backend, and the
# isolation interface imports neither backend.
set -euo pipefail
fail=0
for pkg in ./bbs/... ./brain/... ./isolation/...; do
  deps=$(go list -deps "$pkg" 2>/dev/null | grep -E 'trellis/(isolation_linux|isolation_windows|agent)' || true)
  if [ -n "$deps" ]; then
    echo "check-imports: $pkg must not depend on:"; echo "$deps" | sed 's/^/  /'
    fail=1
  fi
done
exit $fail
