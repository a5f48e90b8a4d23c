#!/usr/bin/env bash
# images.sh builds (or finds cached) the hypervisor-host guest image:
# kernel, stage-1 initramfs and root.qcow2 under <user cache>/ooblab/images/<key>/.
# Needs root (mmdebstrap root mode). Extra flags go to build-image
# (-force, -hvagent PATH, -cache DIR). If bin/hvagent exists it is baked in.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh
args=()
if [ -x bin/hvagent ]; then args+=(-hvagent bin/hvagent); fi
exec go run ./lab/image/cmd/build-image "${args[@]}" "$@"
