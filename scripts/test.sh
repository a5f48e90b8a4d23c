#!/usr/bin/env bash
# test.sh is `make test` (and CI's .ci/run): installs what is missing, builds,
# then runs every tier, each logged to artifacts/<tier>.log:
#   vet          go vet
#   unit         make unit: go test -short, no outside parts
#   integration  make integration: real ipmitool/FreeIPMI, QEMU guests with
#                ipmi_si, libvirtd
#   race         go test -race -short over every package (the unit tier's
#                and the libvirt-linking ones it leaves out)
#   e2e          make e2e: the Ginkgo suite, lab scenarios and the OOB-I loss
#                spec (once; JUnit in artifacts/)
#   fuzz         every fuzz target, 1000 inputs each (a count, not a time:
#                a timed run fails with "context deadline exceeded" when one
#                slow input straddles the deadline on a loaded machine)
# When a tier fails, the last lines name it and its failing tests.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
mkdir -p artifacts
scripts/deps.sh
scripts/build.sh
scripts/services.sh
export PATH="$PWD/bin:$PATH"
pkgs=$(go list ./... | grep -v -e '/scenarios/')

tier() {
  local name=$1; shift
  local t0; t0=$(date +%s)
  echo "== $name"
  if ! "$@" > >(tee "artifacts/$name.log") 2>&1; then
    echo
    echo "make test: tier '$name' FAILED after $(( $(date +%s) - t0 )) s; full log: artifacts/$name.log"
    grep -E -- '^\s*(--- FAIL|FAIL\b|\[FAIL\]|panic:|.*_test\.go:[0-9]+: )' "artifacts/$name.log" | tail -n 30 || true
    [ -d artifacts/lab-logs ] && echo "lab logs (serial consoles, daemons): artifacts/lab-logs/"
    exit 1
  fi
  echo "== $name passed in $(( $(date +%s) - t0 )) s"
}

tier vet go vet ./...
tier unit scripts/unit.sh
tier integration scripts/integration.sh
tier race go test -count=1 -race -short -timeout 20m $pkgs
tier e2e scripts/e2e.sh
tier fuzz env FUZZTIME=1000x scripts/fuzz.sh
echo "make test: all tiers passed in $(( $(date +%s) - start )) s"
