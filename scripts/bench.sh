#!/usr/bin/env bash
# bench.sh runs ooblab's benchmarks, one labelled section each; a section is
# one function (bench_NAME) and one line at the bottom of this file.
# Every process a section starts is recorded in PIDS and killed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

TMP=$(mktemp -d -t ooblab-bench.XXXXXX)
# Each section's program writes its figures here (bench/results format);
# bench/report turns them into bench/report.md, bench/plots/ and
# bench/results.json at the end. BENCH_SECTIONS runs only the named ones.
RESULTS=$TMP/results
mkdir -p "$RESULTS"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT

section() { printf '\n=== %s ===\n' "$*"; }

# bench_lan: in-session RMCP+ latency and throughput of bin/bmcsim against
# OpenIPMI's ipmi_sim, both on loopback UDP, cipher suite 3 (ipmi_sim has no
# suite 17; bmcsim's suite 17 is an extra row). The load generator is
# bench/lan (a lean RMCP+ client; see its package doc). Then ipmitool
# driving BENCH_LAN_EXEC in-session Get Device ID requests with its exec
# command (one lanplus session, -C 3) against each server, runs interleaved.
# Bounded: 3 targets × N concurrencies × (warm-up + measured time) + 2 × 5
# ipmitool runs of ~1 s, ~60 s with the defaults.
#   BENCH_LAN_SESSIONS  concurrent sessions per row, comma-separated (1,4,16)
#   BENCH_LAN_TIME      measured time per row (4s); warm-up is 1 s
#   BENCH_LAN_EXEC      requests per ipmitool exec run (3000; 0: no ipmitool row)
bench_lan() {
  local sessions=${BENCH_LAN_SESSIONS:-1,4,16} dur=${BENCH_LAN_TIME:-4s} execn=${BENCH_LAN_EXEC:-3000}
  local dir=$TMP/lan
  mkdir -p "$dir/ipmi_sim-state"
  go build -trimpath -o "$dir/lan" ./bench/lan

  local ports bmc_port sim_port
  ports=$("$dir/lan" -free-ports 2)
  read -r bmc_port sim_port <<<"$ports"

  # OpenIPMI ipmi_sim: one BMC (MC 0x20), LAN channel 1 on loopback, user 2
  # admin/password with administrator privilege.
  cat >"$dir/lan.conf" <<EOF
name "ooblab-bench"
set_working_mc 0x20
startlan 1
  addr 127.0.0.1 $sim_port
  priv_limit admin
  allowed_auths_callback none md5
  allowed_auths_user none md5
  allowed_auths_operator none md5
  allowed_auths_admin none md5
  guid a123456789abcdefa123456789abcdef
endlan
user 2 true "admin" "password" admin 32 md5 none
EOF
  cat >"$dir/emu" <<'EOF'
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
mc_enable 0x20
EOF
  ipmi_sim -c "$dir/lan.conf" -f "$dir/emu" -s "$dir/ipmi_sim-state" -n >"$dir/ipmi_sim.log" 2>&1 &
  local sim_pid=$!
  PIDS+=("$sim_pid")

  (umask 077 && printf 'password\n' >"$dir/bmc.pw") # bmcsim reads passwords from 0600 files only
  bin/bmcsim --lan "127.0.0.1:$bmc_port" --user "admin:@$dir/bmc.pw:administrator" \
    --session-limit 32 --log-level warn >"$dir/bmcsim.log" 2>&1 &
  local bmc_pid=$!
  PIDS+=("$bmc_pid")

  if ! "$dir/lan" -wait "127.0.0.1:$bmc_port,127.0.0.1:$sim_port" -wait-timeout 15s; then
    echo "bench_lan: a server did not answer RMCP presence pings; logs:" >&2
    tail -n 20 "$dir/bmcsim.log" "$dir/ipmi_sim.log" >&2
    return 1
  fi

  echo "bmcsim pid $bmc_pid on 127.0.0.1:$bmc_port (--procs 1 by default; $(nproc) CPUs);" \
    "ipmi_sim (openipmi $(dpkg-query -W -f='${Version}' openipmi 2>/dev/null || echo '?')) pid $sim_pid" \
    "on 127.0.0.1:$sim_port (single-threaded); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  local rc=0
  timeout 170 "$dir/lan" -c "$sessions" -d "$dur" -warmup 1s -procs 1 -ipmitool-exec "$execn" -exec-runs 5 \
    -target "bmcsim,127.0.0.1:$bmc_port,3,$bmc_pid" \
    -target "ipmi_sim,127.0.0.1:$sim_port,3,$sim_pid" \
    -target "bmcsim,127.0.0.1:$bmc_port,17,$bmc_pid" \
    -ratio bmcsim/ipmi_sim -json "$RESULTS/lan.json" || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "bench_lan: load generator failed (exit $rc); server logs:" >&2
    tail -n 20 "$dir/bmcsim.log" "$dir/ipmi_sim.log" >&2
  fi
  kill "$bmc_pid" "$sim_pid" 2>/dev/null || true
  return "$rc"
}

# bench_kcs: the raw KCS path from inside one TCG guest (lab/kcsguest) with
# three BMCs side by side, requests interleaved across them: bmcsim and
# OpenIPMI's ipmi_sim behind QEMU's ipmi-bmc-extern chardev, and QEMU's own
# in-process ipmi-bmc-sim (no socket hop). See bench/kcs's package doc.
# Bounded: one guest boot (~20 s) + 3 × 5 × N round trips (~10 s), ~40 s.
#   BENCH_KCS_N  round trips per BMC and measurement (300)
bench_kcs() {
  local dir=$TMP/kcs
  mkdir -p "$dir"
  go build -trimpath -o "$dir/kcs" ./bench/kcs
  echo "CPUs $(nproc), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  timeout -k 10 400 "$dir/kcs" -n "${BENCH_KCS_N:-300}" -timeout 6m -json "$RESULTS/kcs.json"
}

# bench_lab: a whole lab (bmcsim + QEMU hypervisor host + hvagent + vmsctl
# client) measured by bench/lab, four tables with the issue's goals beside:
# lab up per stage (cold with the guest image rebuilt, warm, warm 3 hosts),
# vm status round trip over VMM-I vs OOB-I, VMM-I unplug → OOB-I failover,
# and sealed OOB-I payload throughput vs the raw KCS ceiling (bench/kcs's
# guest, measured in the same run). Its own state folder, guest image cache
# and ports (never the lab in .lab); every lab it starts it stops. Bounded
# by timeout: ~5-8 min (a cold image build is 2-3 min of it on a loaded machine).
#   BENCH_LAB_BASE_PORT  first BMC LAN port (36230; KCS +100, VMM-I +2000, metrics +3000)
#   BENCH_LAB_N          vm status round trips per channel (200)
#   BENCH_LAB_COLD       0 skips the cold `lab up` (image rebuild)
bench_lab() {
  local dir=$TMP/lab port=${BENCH_LAB_BASE_PORT:-36230} cold=true
  [ "${BENCH_LAB_COLD:-1}" = 0 ] && cold=false
  mkdir -p "$dir"
  go build -trimpath -o "$dir/benchlab" ./bench/lab
  echo "CPUs $(nproc), load average before: $(cut -d' ' -f1-3 /proc/loadavg); base port $port"
  local rc=0
  timeout -k 30 660 "$dir/benchlab" -dir "$dir/work" -bin bin -base-port "$port" \
    -n "${BENCH_LAB_N:-200}" -cold="$cold" -timeout 10m -json "$RESULTS/lab.json" || rc=$?
  # Safety net: the bench stops its labs itself, also on SIGTERM.
  bin/lab --dir "$dir/work/lab" down >/dev/null 2>&1 || true
  [ "$rc" -ne 0 ] && echo "bench_lab: failed (exit $rc); lab logs were in $dir/work/lab" >&2
  return "$rc"
}

# bench_oob: sealed OOB-I messages VMS → BMC → system interface on loopback
# (in-process bmcsim, RMCP+ suite 17, hvagent's OOB loop over the chardev
# client): per-message latency (median, p99) and KB/s for 200 B, 4 KiB and
# 64 KiB, sealed vs the same bytes unsealed through the same path
# (interleaved), seal+open alone, and the vmsctl/client OOB-I round trip.
# See bench/oob's package doc. Bounded: ~25 s with the defaults.
#   BENCH_OOB_SIZES  message sizes (200,4096,65536)
#   BENCH_OOB_TIME   interleaved one-way time per size (4s)
bench_oob() {
  local dir=$TMP/oob
  mkdir -p "$dir"
  go build -trimpath -o "$dir/oob" ./bench/oob
  echo "CPUs $(nproc), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  timeout -k 10 90 "$dir/oob" -sizes "${BENCH_OOB_SIZES:-200,4096,65536}" -time "${BENCH_OOB_TIME:-4s}" -json "$RESULTS/oob.json"
}

# bench_fleet: bin/bmcsim --fleet N (N BMCs, one process) with N hvagents
# in one process (hvagent's run.Run over each BMC's chardev, libvirt
# test:///default) and bin/vmsctl host status over the OOB-I with no host
# named (bounded fan-out): bmcsim RSS idle / with hosts / after, start-up
# times, host status wall time at each size. No QEMU. ~40 s with the defaults.
#   BENCH_FLEET_SIZES  fleet sizes (10,100,1000)
#   BENCH_FLEET_RUNS   host status runs per size (3)
bench_fleet() {
  local dir=$TMP/fleet
  mkdir -p "$dir"
  go build -trimpath -o "$dir/fleet" ./bench/fleet
  echo "CPUs $(nproc), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  timeout -k 10 300 "$dir/fleet" -bin bin -dir "$dir/work" -sizes "${BENCH_FLEET_SIZES:-10,100,1000}" \
    -runs "${BENCH_FLEET_RUNS:-3}" -json "$RESULTS/fleet.json"
}

# bench_journal: hvagent's request journal at 500 state changes a second
# for 10 minutes of simulated time (Go benchmark, fsync skipped: sizes, not
# disk speed): file bytes, records and bytes written per second, ids held.
# ~5 s.
bench_journal() {
  go test -run '^$' -bench StateChanges500PerSecond10Minutes -benchtime 1x -benchmem ./hvagent/journal
}

# bench_redfish: 100 concurrent HTTPS clients (HTTP Basic, keep-alive)
# reading Systems/1 from one in-process bmcsim, at GOMAXPROCS=1 as bmcsim
# runs: requests/s and p99; and an alert landing in the SEL to an SSE
# subscriber reading its event (p50, p99; goal ≤ 100 ms). ~2 s.
bench_redfish() {
  GOMAXPROCS=1 go test -run '^$' -bench 'Systems100Clients|SSEAlertLatency' -benchtime 5000x ./bmcsim/redfish
}

# run_section NAME TITLE: runs bench_NAME unless BENCH_SECTIONS leaves it
# out; a failed section is reported at the end, the others still run.
FAILED=()
run_section() {
  local name=$1 title=$2
  if [ -n "${BENCH_SECTIONS:-}" ] && [[ ",$BENCH_SECTIONS," != *",$name,"* ]]; then
    return 0
  fi
  section "$title (bench_$name)"
  "bench_$name" || FAILED+=("$name")
}

section "deps (scripts/deps.sh)"
scripts/deps.sh
section "build (scripts/build.sh)"
scripts/build.sh
run_section lan "LAN: bmcsim vs OpenIPMI ipmi_sim, in-session RMCP+ requests"
run_section kcs "KCS: raw system interface from a TCG guest, bmcsim vs ipmi_sim vs QEMU's ipmi-bmc-sim"
run_section lab "lab: lab up, vm status VMM-I vs OOB-I, failover, sealed payload vs raw KCS"
run_section oob "OOB-I: sealed vs unsealed messages VMS → system interface, seal+open alone"
run_section fleet "fleet: bmcsim --fleet RSS and vmsctl host status at 10/100/1000 hosts"
run_section redfish "Redfish: 100 concurrent clients reading Systems/1 (requests/s, p99)"
run_section journal "journal: hvagent's request journal at 500 state changes/s for 10 min (simulated)"

section "report (bench/report): bench/report.md, bench/plots/, bench/results.json"
if compgen -G "$RESULTS/*.json" >/dev/null; then
  go run ./bench/report -sections "$RESULTS" -out bench
  echo "wrote bench/report.md, bench/results.json and bench/plots/ (sections with figures: $(cd "$RESULTS" && ls -- *.json | tr '\n' ' '))"
else
  echo "no section wrote figures; no report" >&2
fi
if [ "${#FAILED[@]}" -gt 0 ]; then
  echo "bench: failed sections: ${FAILED[*]}" >&2
  exit 1
fi
