#!/usr/bin/env bash
# e2e.sh is `make e2e`: the Ginkgo lab scenarios on a real lab (bmcsim + a
# QEMU hypervisor host with libvirt and hvagent). LABELS selects specs, e.g.
# LABELS=failover. The JUnit report goes to artifacts/e2e-junit.xml.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p artifacts
go tool ginkgo -v --timeout=30m --label-filter="${LABELS:-}" \
  --output-dir="$PWD/artifacts" --junit-report=e2e-junit.xml ./scenarios/lab
