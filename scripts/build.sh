#!/usr/bin/env bash
# build.sh compiles every ooblab program into bin/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bin
for prog in bmcsim hvagent vmsctl lab; do
  if [ -f "$prog/main.go" ]; then
    go build -trimpath -o "bin/$prog" "./$prog"
  fi
done
# hvagent runs inside the guest: a static build (no cgo) is not possible with
# libvirt, so the guest image carries the same libvirt as the host (Debian 12).
