#!/usr/bin/env bash
# soak.sh is `make soak`: the OOB-I loss spec (scenarios/lab, label loss) at length.
# 10,000 sealed requests (OOBLAB_LOSS_N) VMS → 20%-lossy UDP proxy → bmcsim
# (SIGKILLed and restarted from --state twice) → chardev system interface →
# hvagent's OOB loop and agent → back; every request id answered as expected
# and run exactly once. ~15 req/s on a 2-core machine: about 12 minutes.
#   OOBLAB_LOSS_N     requests (10000)
#   OOBLAB_LOSS_SEED  proxy/VMS RNG seed (printed by every run; set it to repeat one)
#   OOBLAB_LOSS_DROP  drop probability per packet and direction (0.2)
#   SOAK_TIMEOUT      the suite's --timeout (60m); the spec's own deadline is
#                     150 ms a message + 3 min
set -euo pipefail
cd "$(dirname "$0")/.."
export OOBLAB_LOSS_N=${OOBLAB_LOSS_N:-10000}
echo "== soak: the loss spec with OOBLAB_LOSS_N=$OOBLAB_LOSS_N (seed ${OOBLAB_LOSS_SEED:-random})"
mkdir -p artifacts
go tool ginkgo -v --timeout="${SOAK_TIMEOUT:-60m}" --label-filter=loss \
  --output-dir="$PWD/artifacts" --junit-report=soak-junit.xml ./scenarios/lab
