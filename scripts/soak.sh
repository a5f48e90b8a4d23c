#!/usr/bin/env bash
# soak.sh is `make soak`: the OOB-I loss test (scenarios/loss) at length.
# 10,000 sealed requests (OOBLAB_LOSS_N) VMS → 20%-lossy UDP proxy → bmcsim
# (SIGKILLed and restarted from --state twice) → chardev system interface →
# hvagent's OOB loop and agent → back; every request id answered as expected
# and run exactly once. ~15 req/s on a 2-core machine: about 12 minutes.
#   OOBLAB_LOSS_N     requests (10000)
#   OOBLAB_LOSS_SEED  proxy/VMS RNG seed (printed by every run; set it to repeat one)
#   OOBLAB_LOSS_DROP  drop probability per packet and direction (0.2)
#   SOAK_TIMEOUT      go test -timeout (60m)
set -euo pipefail
cd "$(dirname "$0")/.."
export OOBLAB_LOSS_N=${OOBLAB_LOSS_N:-10000}
echo "== soak: scenarios/loss with OOBLAB_LOSS_N=$OOBLAB_LOSS_N (seed ${OOBLAB_LOSS_SEED:-random})"
go test -count=1 -v -run '^TestLossyOOB$' -timeout "${SOAK_TIMEOUT:-60m}" ./scenarios/loss
