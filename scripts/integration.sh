#!/usr/bin/env bash
# integration.sh is `make integration`: the Go tests with real peers —
# ipmitool and FreeIPMI against bmcsim, QEMU guests with the Linux ipmi_si
# driver, libvirtd. Needs what `make deps` installs and root for libvirtd
# (scripts/services.sh starts it). The OOB-I loss test is a spec of the
# Ginkgo suite (label loss), run by `make e2e`. It runs every package's
# tests, so also the ones `make unit` leaves out (the packages that link
# libvirt: their test:///default tests).
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
