#!/usr/bin/env bash
# Installs the Debian packages trellis needs to build, run and test, and downloads the Go
# modules. Idempotent: runs apt-get only for what is missing, and `apt-get update` at most once.
set -euo pipefail

packages=(
  ca-certificates
  iproute2                   # ip, for network namespaces and veth
  iptables                   # NAT and port mapping rules written by the CNI plugins
  containernetworking-plugins # bridge, host-local, portmap, loopback in /usr/lib/cni
  busybox-static             # the small Linux rootfs stack used by tests and `make run`
  e2fsprogs xfsprogs         # mkfs.ext4 (per-container disk images) and XFS project quotas
  runc crun                  # peers measured side by side by `make bench`
  msitools wixl osslsigncode # the Windows cell's MSI: build, inspect, sign
)
packages+=("$@")

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v go >/dev/null 2>&1; then
  echo "install-deps: Go is not on PATH (expected /usr/local/go/bin)" >&2
  exit 1
fi
go mod download
