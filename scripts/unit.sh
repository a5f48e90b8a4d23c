#!/usr/bin/env bash
# unit.sh is `make unit`: the quick tier. No root, no QEMU, no libvirtd, no
# apt: go test -short skips every test that drives a real outside part
# (testutil.Integration) and the scenarios. Run it after any change.
#
# It leaves out the packages whose build or tests link libvirt (cgo:
# hvagent/virt/lvirt and what imports it — hvagent's run and main, lab's
# simfleet and commands, bench/fleet): building libvirt's binding and
# linking those binaries externally was ~40 of a cold run's ~150
# CPU-seconds. Their tests run in `make integration` (every package) and
# in make test's race tier (every package, -short); the agent and its
# channels are tested here on hvagent/virt/virttest's in-memory hypervisor.
#
# Cheaper than a plain go test, same tests: vet is its own tier (`make test`
# runs go vet ./... first; run it yourself before a commit), so go test's
# vet pass is off here; test binaries are linked without DWARF (-w: stack
# traces need none), which shortens ~50 links on a cold cache. -p 4 on a
# 2-core machine: a test binary that mostly waits on deadlines (vmsctl/client
# 8 s wall for 0.4 CPU-seconds, bmcsim/bmc 3 s for 0.03) holds one of go
# test's -p slots, and with the default (one per core) the compiles wait.
set -euo pipefail
cd "$(dirname "$0")/.."
libvirt=$(go list -test -f '{{if .ForTest}}{{.ForTest}}{{else}}{{.ImportPath}}{{end}}{{range .Deps}} {{.}}{{end}}' ./... |
  awk '/ libvirt\.org\/go\/libvirt( |$)/ { sub(/ .*/, ""); sub(/\.test$/, ""); print }' | sort -u)
pkgs=$(go list ./... | grep -v -e '/scenarios/' | grep -vxF -f <(echo "$libvirt"))
go test -short -count=1 -vet=off -ldflags=-w -p 4 -timeout 5m $pkgs
