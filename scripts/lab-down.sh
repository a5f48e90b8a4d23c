#!/usr/bin/env bash
# lab-down.sh is `make lab-down`: stops everything lab-up started.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x bin/lab ]; then
  exec bin/lab down "$@"
fi
dir="${OOBLAB_LAB_DIR:-$PWD/.lab}"
if [ -f "$dir/bmcsim.pid" ]; then
  pid=$(cat "$dir/bmcsim.pid")
  if kill "$pid" 2>/dev/null; then
    # wait for it to exit (bounded)
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$dir/bmcsim.pid"
fi
echo "lab down"
