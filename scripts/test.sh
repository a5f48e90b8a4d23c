#!/usr/bin/env bash
# test.sh is `make test`: installs what is missing, builds, then runs every tier.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh
export PATH="$PWD/bin:$PATH"
echo "== unit and integration tests (real ipmitool / FreeIPMI / QEMU where named)"
go test -count=1 -timeout 20m ./...
echo "== race detector"
go test -count=1 -race -timeout 15m ./...
echo "== fuzz smoke (each target 5 s)"
FUZZTIME=5s scripts/fuzz.sh
