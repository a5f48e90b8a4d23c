#!/usr/bin/env bash
# e2e.sh is `make e2e`: the one Ginkgo suite (scenarios/lab). Specs labelled
# lab run on a real lab (bmcsim + a QEMU hypervisor host with libvirt and
# hvagent), brought up before the first of them only; kcs-guest and loss
# need none. LABELS selects specs, e.g. LABELS=failover or LABELS=loss. The JUnit report goes to artifacts/e2e-junit.xml.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p artifacts
go tool ginkgo -v --timeout=30m --label-filter="${LABELS:-}" \
  --output-dir="$PWD/artifacts" --junit-report=e2e-junit.xml ./scenarios/lab
