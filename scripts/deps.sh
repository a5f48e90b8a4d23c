#!/usr/bin/env bash
# deps.sh installs the Debian packages ooblab needs, when they are missing.
# As root it runs apt-get itself; otherwise it prints the exact command.
set -euo pipefail

PKGS=(
  ipmitool freeipmi-tools openipmi            # real IPMI clients and the ipmi_sim peer
  qemu-system-x86 qemu-utils                  # the hypervisor host guests
  libvirt-dev pkg-config gcc                  # cgo build of libvirt.org/go/libvirt
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients
  linux-image-amd64 busybox-static cpio zstd  # guest kernel and initramfs
  xz-utils                                    # the kernel unpacked for a PVH boot (lab/image/pvh.go)
  mmdebstrap debootstrap e2fsprogs            # guest root filesystem (mkfs.ext4 -d, debugfs)
  iproute2 procps
  chromium                                    # the lab page's browser spec (headless, driven by chromedp)
  python3-sushy redfishtool                   # real Redfish clients against bmcsim (bmcsim/redfish)
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
cmd="apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "ooblab: missing Debian packages: ${missing[*]}" >&2
  echo "ooblab: run as root:  sudo sh -c '$cmd'" >&2
  exit 1
fi
echo "ooblab: installing ${missing[*]}" >&2
sh -c "$cmd" >&2
