#!/usr/bin/env bash
# lab-down.sh is `make lab-down`: `bin/lab down` stops everything lab up started.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x bin/lab ] || scripts/build.sh
exec bin/lab down "$@"
