#!/usr/bin/env bash
# Builds the installers into dist/ (or $OUT): the Linux and Windows trellis binaries, the
# trellis, trellis-agent and trellis-server .deb packages, and the Windows cell's MSI.
#
# Needs wixl (Debian package wixl) for the MSI; SKIP_MSI=1 builds only the .deb packages.
# Signing is optional: set TRELLIS_SIGN_CERT and TRELLIS_SIGN_KEY (PEM) or
# TRELLIS_SIGN_PKCS12, with TRELLIS_SIGN_PASSWORD when the key has one, and
# TRELLIS_TIMESTAMP_URL for a countersignature (needs osslsigncode).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
OUT=${OUT:-dist}
LDFLAGS="-s -w -X github.com/trellis-run/trellis/cmd/trellis/command.Version=${VERSION}"
mkdir -p "$OUT/bin"

echo "packages: building trellis ${VERSION} for linux/amd64"
CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -ldflags "$LDFLAGS" -o "$OUT/bin/trellis" ./cmd/trellis
args=(--version "$VERSION" --out "$OUT" --linux-binary "$OUT/bin/trellis")

if [ "${SKIP_MSI:-0}" != 1 ]; then
  if ! command -v wixl >/dev/null 2>&1; then
    echo "packages: wixl not found: apt-get install wixl (or SKIP_MSI=1 for the .deb packages only)" >&2
    exit 1
  fi
  echo "packages: building trellis ${VERSION} for windows/amd64"
  CGO_ENABLED=0 GOOS=windows GOARCH=amd64 go build -trimpath -ldflags "$LDFLAGS" -o "$OUT/bin/trellis.exe" ./cmd/trellis
  args+=(--windows-exe "$OUT/bin/trellis.exe")
fi

[ -n "${TRELLIS_SIGN_CERT:-}" ] && args+=(--sign-cert "$TRELLIS_SIGN_CERT")
[ -n "${TRELLIS_SIGN_KEY:-}" ] && args+=(--sign-key "$TRELLIS_SIGN_KEY")
[ -n "${TRELLIS_SIGN_PKCS12:-}" ] && args+=(--sign-pkcs12 "$TRELLIS_SIGN_PKCS12")
[ -n "${TRELLIS_SIGN_PASSWORD:-}" ] && args+=(--sign-password-env TRELLIS_SIGN_PASSWORD)
[ -n "${TRELLIS_TIMESTAMP_URL:-}" ] && args+=(--timestamp-url "$TRELLIS_TIMESTAMP_URL")

go run ./installer/cmd/trellis-packages "${args[@]}"
