#!/usr/bin/env bash
# Builds the example droplets into DIR (default bin/blobs): the hello app as a static Linux
# binary (hello-droplet.tgz) and as a Windows executable (hello-droplet-windows.tgz). A droplet
# is a .tgz whose contents a download action unpacks into the container.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$repo/bin/blobs}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/linux" "$work/windows"
(cd "$repo" && CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags '-s -w' -o "$work/linux/hello-app" ./examples/hello-app)
(cd "$repo" && CGO_ENABLED=0 GOOS=windows go build -trimpath -ldflags '-s -w' -o "$work/windows/hello-app.exe" ./examples/hello-app)
tar -C "$work/linux" -czf "$out/hello-droplet.tgz.tmp" hello-app && mv "$out/hello-droplet.tgz.tmp" "$out/hello-droplet.tgz"
tar -C "$work/windows" -czf "$out/hello-droplet-windows.tgz.tmp" hello-app.exe && mv "$out/hello-droplet-windows.tgz.tmp" "$out/hello-droplet-windows.tgz"
echo "example droplets in $out: $(cd "$out" && ls hello-droplet*.tgz | tr '\n' ' ')"
