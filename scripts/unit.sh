#!/usr/bin/env bash
# unit.sh is `make unit`: the quick tier. No root, no QEMU, no libvirtd, no
# apt: go test -short skips every test that drives a real outside part
# (testutil.Integration) and the scenarios. Run it after any change.
#
# Cheaper than a plain go test, same tests: vet is its own tier (`make test`
# runs go vet ./... first; run it yourself before a commit), so go test's
# vet pass is off here; test binaries are linked without DWARF (-w: stack
# traces need none), which shortens ~60 links on a cold cache.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=$(go list ./... | grep -v -e '/scenarios/')
go test -short -count=1 -vet=off -ldflags=-w -timeout 5m $pkgs
