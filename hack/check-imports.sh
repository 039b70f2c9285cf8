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
# The container init runs from containerinit's package initialisation; a dependency that needs
# os and sorts late in import-path order would have it wait for most of the program's packages
# at every container start (isolation_linux/containerinit/init_linux.go, init).
late=$(go list -deps ./isolation_linux/containerinit 2>/dev/null |
  grep -xE 'os/signal|os/user|path/filepath|archive/tar|log|log/slog|net|runtime/debug|github.com/trellis-run/trellis/isolation' || true)
if [ -n "$late" ]; then
  echo "check-imports: isolation_linux/containerinit must not depend on:"; echo "$late" | sed 's/^/  /'
  fail=1
fi
exit $fail
