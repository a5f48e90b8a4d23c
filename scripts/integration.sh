#!/usr/bin/env bash
# integration.sh is `make integration`: the Go tests with real peers —
# ipmitool and FreeIPMI against bmcsim, QEMU guests with the Linux ipmi_si
# driver, libvirtd — and the OOB-I loss test (20% UDP loss both ways,
# bmcsim SIGKILLed twice), once. Needs what `make deps` installs and root
# for libvirtd (scripts/services.sh starts it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh
scripts/services.sh
export PATH="$PWD/bin:$PATH"
pkgs=$(go list ./... | grep -v -e '/scenarios/')
# One package at a time: these tests boot guests and time real peers, and
# two TCG guests on two cores make each other's deadlines lie.
go test -p 1 -count=1 -timeout 20m $pkgs
echo "== OOB-I loss test"
go test -count=1 -v -timeout 10m ./scenarios/loss 2>&1 | grep -v '^=== RUN'
