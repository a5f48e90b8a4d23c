#!/usr/bin/env bash
# unit.sh is `make unit`: the quick tier. No root, no QEMU, no libvirtd, no
# apt: go test -short skips every test that drives a real outside part
# (testutil.Integration) and the scenarios. Run it after any change; ~1 min.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=$(go list ./... | grep -v -e '/scenarios/')
go test -short -count=1 -timeout 5m $pkgs
