#!/usr/bin/env bash
# lab-up.sh is `make lab-up`: installs what is missing, builds, then
# `bin/lab up` (arguments pass through, e.g. --hosts 3).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh
exec bin/lab up "$@"
