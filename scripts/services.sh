#!/usr/bin/env bash
# services.sh starts the host services the tests use when they are not
# running: libvirtd (qemu:///system) and virtlogd. It needs root; as another
# user it says what is missing and the tests that need them skip.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "ooblab: not root; libvirtd tests use whatever libvirtd is running" >&2
  exit 0
fi
if ! pgrep -x virtlogd >/dev/null; then
  virtlogd -d
fi
if ! pgrep -x libvirtd >/dev/null; then
  libvirtd -d
fi
# Wait (bounded) until libvirtd answers.
for _ in $(seq 100); do
  if virsh -c qemu:///system version >/dev/null 2>&1; then exit 0; fi
  sleep 0.1
done
echo "ooblab: libvirtd did not come up" >&2
exit 1
