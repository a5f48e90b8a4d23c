#!/usr/bin/env bash
# lab-up.sh is `make lab-up`. Until bin/lab exists it brings up bmcsim alone
# (one BMC on loopback) and prints how to talk to it; once bin/lab exists it
# hands over to `bin/lab up`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh
if [ -x bin/lab ]; then
  exec bin/lab up "$@"
fi
dir="${OOBLAB_LAB_DIR:-$PWD/.lab}"
mkdir -p "$dir"
chmod 700 "$dir"
port="${OOBLAB_BMC_PORT:-6230}"
if [ ! -s "$dir/admin.password" ]; then
  umask 077
  head -c 15 /dev/urandom | base64 | tr -d '/+=' | head -c 16 > "$dir/admin.password"
fi
if [ -f "$dir/bmcsim.pid" ] && kill -0 "$(cat "$dir/bmcsim.pid")" 2>/dev/null; then
  echo "bmcsim already running (pid $(cat "$dir/bmcsim.pid"))"
else
  bin/bmcsim --name h1 --lan "127.0.0.1:$port" --user "admin:@$dir/admin.password:administrator" \
    --metrics 127.0.0.1:9120 >"$dir/bmcsim.log" 2>&1 &
  echo $! >"$dir/bmcsim.pid"
fi
# Ready when a real client gets an answer (ipmitool retries for us).
if ! ipmitool -I lanplus -C 17 -H 127.0.0.1 -p "$port" -U admin -f "$dir/admin.password" -R 10 -N 1 mc info >/dev/null 2>&1; then
  echo "bmcsim did not answer; its log:" >&2
  cat "$dir/bmcsim.log" >&2
  exit 1
fi
cat <<MSG
ready: bmcsim "h1" answers IPMI over LAN on 127.0.0.1:$port (RMCP+, cipher suites 17 and 3)
  password file : $dir/admin.password (mode 0600)
  log           : $dir/bmcsim.log
  metrics       : http://127.0.0.1:9120/metrics

try:
  ipmitool -I lanplus -C 17 -H 127.0.0.1 -p $port -U admin -f $dir/admin.password mc info
  ipmitool -I lanplus -C 17 -H 127.0.0.1 -p $port -U admin -f $dir/admin.password chassis power status
  bmc-info -h 127.0.0.1:$port -u admin -p "\$(cat $dir/admin.password)" --driver-type=LAN_2_0 --cipher-suite-id=17
stop with: make lab-down
MSG
