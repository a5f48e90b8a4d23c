#!/usr/bin/env bash
# test.sh is `make test` (and CI's .ci/run): installs what is missing, builds,
# then runs every tier:
#   1. go vet
#   2. Go tests: unit, real ipmitool/FreeIPMI against bmcsim, real QEMU guests
#      with the Linux ipmi_si driver, real libvirtd, the OOB-I loss test
#   3. the same under the race detector (-short: the QEMU/lab-heavy tests ran
#      in tier 2)
#   4. the end-to-end lab scenarios (Ginkgo, scripts/e2e.sh)
#   5. every fuzz target for a few seconds
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
scripts/deps.sh
scripts/build.sh
scripts/services.sh
export PATH="$PWD/bin:$PATH"
pkgs=$(go list ./... | grep -v -e '/scenarios/lab$' -e '/scenarios/loss$')
echo "== go vet"
go vet ./...
echo "== tests"
go test -count=1 -timeout 20m $pkgs
echo "== OOB-I loss test (20% UDP loss both ways, bmcsim SIGKILLed twice)"
go test -count=1 -v -timeout 10m ./scenarios/loss 2>&1 | grep -v '^=== RUN' 
echo "== race detector"
go test -count=1 -race -short -timeout 20m $pkgs ./scenarios/loss
echo "== end-to-end lab scenarios"
scripts/e2e.sh
echo "== fuzz smoke (each target 3 s)"
FUZZTIME=3s scripts/fuzz.sh
echo "make test: all tiers passed in $(( $(date +%s) - start )) s"
