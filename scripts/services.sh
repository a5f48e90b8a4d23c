#!/usr/bin/env bash
# services.sh starts the host services the tests use when they are not
# running: libvirtd (qemu:///system) and virtlogd. It needs root; as another
# user it says what is missing and the tests that need them skip.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "ooblab: not root; libvirtd tests use whatever libvirtd is running" >&2
  exit 0
fi
# Two `make test` at once on a machine where they are not running yet both
# saw no daemon and both started one; the second failed on the daemon's
# pidfile. One lock; and a start that fails because another won is fine.
exec 9>/run/ooblab-services.lock
flock -w 60 9
start() { # name: start the daemon unless it runs (or is started meanwhile)
  pgrep -x "$1" >/dev/null && return 0
  "$1" -d 9>&- || pgrep -x "$1" >/dev/null # 9>&-: the daemon must not hold the lock
}
start virtlogd
start libvirtd
# Wait (bounded) until libvirtd answers.
for _ in $(seq 100); do
  if virsh -c qemu:///system version >/dev/null 2>&1; then exit 0; fi
  sleep 0.1
done
echo "ooblab: libvirtd did not come up" >&2
exit 1
