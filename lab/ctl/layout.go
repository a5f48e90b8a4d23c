// Package ctl is the lab's control logic behind bin/lab: it lays out a lab
// state folder, starts one bmcsim process for every host's BMC and one QEMU
// hypervisor-host guest per host, waits for readiness by events, and cuts or
// restores the VMM-I link over QMP.
//
// State folder (default ./.lab, or $OOBLAB_LAB_DIR), mode 0700:
//
//	lab.json              what `lab up` started (ports, pids, timings)
//	inventory.json        hosts for vmsctl (internal/inventory), 0600
//	operator.key          the operator's TOTP key (otpauth URI), 0600
//	bmcsim.toml           the BMCs of the bmcsim process
//	bmcsim.log, bmcsim.pid
//	bmcsim-admin.sock     bmcsim's simulation control (bin/lab sensor), 0600
//	tls/ca.pem            the lab CA: signs each hvagent certificate (naming
//	                      that host only) and each principal's client certificate
//	principals/NAME.key   principal NAME's Ed25519 key (signs requests, TLS), 0600
//	principals/NAME.pem   its VMM-I client certificate (CN = NAME)
//	hN/bmc-vms.password   BMC password of host N's "vms" (OPERATOR: the OOB-I), 0600
//	hN/bmc-admin.password BMC password of host N's "admin" (ADMINISTRATOR: SOL), 0600
//	hN/console-root.password root password of host N's ttyS0 login (SOL, bin/lab console), 0600
//	hN/host.key           host N's enrolled TOTP key (otpauth URI), 0600
//	hN/policy.toml        host N's authorization list
//	hN/bmc-state/         bmcsim queue journal
//	hN/qemu/              run folder: overlay, qmp.sock, console.log, qemu.log,
//	                      shell.sock (the guest's ttyS1: the lab shell, Exec)
//	hN/config.img         the guest's config disk
package ctl

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ooblab/ooblab/internal/fileio"
)

// Dir returns the lab state folder.
func Dir() string {
	if d := os.Getenv("OOBLAB_LAB_DIR"); d != "" {
		return d
	}
	wd, err := os.Getwd()
	if err != nil {
		return ".lab"
	}
	return filepath.Join(wd, ".lab")
}

// State is lab.json: what a running lab consists of.
type State struct {
	Started time.Time `json:"started"`
	Accel   string    `json:"accel"`
	BMCSim  Proc      `json:"bmcsim"`
	// UI is `lab ui`, the lab's web page, at UIURL (token included).
	UI       Proc           `json:"ui,omitzero"`
	UIURL    string         `json:"ui_url,omitempty"`
	Hosts    []HostState    `json:"hosts"`
	Stages   []StageTiming  `json:"stages"`
	ImageKey string         `json:"image_key"`
	Extra    map[string]any `json:"extra,omitempty"`
}

// Proc is a process the lab started.
type Proc struct {
	Pid int `json:"pid"`
	// Argv is how it was started (bmcsim), so RestartBMCSim starts it the
	// same way.
	Argv []string `json:"argv,omitempty"`
}

// HostState is one hypervisor host of the lab.
type HostState struct {
	Name   string `json:"name"`
	BMCLAN string `json:"bmc_lan"`
	BMCKCS string `json:"bmc_kcs"`
	// BMCSerial is the BMC's serial port QEMU's ttyS0 dials (SOL).
	BMCSerial string `json:"bmc_serial,omitempty"`
	// BMCRedfish is the BMC's Redfish service (HTTPS, lab CA certificate).
	BMCRedfish string   `json:"bmc_redfish,omitempty"`
	VMMI       string   `json:"vmmi"`
	QEMU       Proc     `json:"qemu"`
	RunDir     string   `json:"run_dir"`
	VMs        []string `json:"vms"`
	VMMILink   bool     `json:"vmmi_link"`
}

// StageTiming is how long one stage of `lab up` took.
type StageTiming struct {
	Stage   string        `json:"stage"`
	Elapsed time.Duration `json:"elapsed_ns"`
}

// ErrNotUp is returned when the state folder holds no running lab.
var ErrNotUp = errors.New("no lab is up here (run `make lab-up`)")

func loadState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, "lab.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotUp
	}
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s/lab.json: %w", dir, err)
	}
	return &st, nil
}

func saveState(dir string, st *State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return fileio.WriteFile(filepath.Join(dir, "lab.json"), append(b, '\n'), 0o600)
}

func (st *State) host(name string) (*HostState, error) {
	for i := range st.Hosts {
		if st.Hosts[i].Name == name {
			return &st.Hosts[i], nil
		}
	}
	return nil, fmt.Errorf("no host %q in this lab", name)
}

// ErrLabUp is Up's answer when the state folder's lab still runs.
var ErrLabUp = errors.New("a lab is already up")

// alivePids are the processes of st that still run: bmcsim's and every
// host's QEMU.
func (st *State) alivePids() []int {
	var pids []int
	if processAlive(st.BMCSim.Pid) {
		pids = append(pids, st.BMCSim.Pid)
	}
	for _, h := range st.Hosts {
		if processAlive(h.QEMU.Pid) {
			pids = append(pids, h.QEMU.Pid)
		}
	}
	return pids
}
