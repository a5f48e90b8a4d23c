package cmd

// The output schema of every command's -o json / -o yaml: lowercase
// snake_case keys, one shape per thing (a VM, a host, an alert) wherever it
// appears, times as RFC 3339 in UTC, durations as integer seconds or
// milliseconds named by their unit. docs/vmsctl.md documents it and
// testdata/*.golden pins it (go test ./vmsctl/cmd -run Golden -update).
// The wire types (vmsg) are never printed directly: their Go field names
// are not a schema.

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

// vmOut is one VM.
type vmOut struct {
	Name         string `json:"name"`
	State        string `json:"state"`
	Reason       string `json:"reason,omitempty"`
	VCPUs        uint32 `json:"vcpus"`
	MemoryKiB    uint64 `json:"memory_kib"`
	MaxMemoryKiB uint64 `json:"max_memory_kib,omitempty"`
	CPUTimeMs    uint64 `json:"cpu_time_ms"`
	UptimeS      uint64 `json:"uptime_s"`
	UptimeSource string `json:"uptime_source,omitempty"`
	Autostart    bool   `json:"autostart"`
	Persistent   bool   `json:"persistent"`
}

func vmsOut(in []vmsg.VMState) []vmOut {
	if in == nil {
		return nil
	}
	out := make([]vmOut, len(in))
	for i, v := range in {
		out[i] = vmOut{Name: v.Name, State: v.State, Reason: v.Reason, VCPUs: v.VCPUs, MemoryKiB: v.MemoryKiB,
			MaxMemoryKiB: v.MaxMemKiB, CPUTimeMs: v.CPUTimeMs, UptimeS: v.UptimeSec, UptimeSource: v.UptimeSource,
			Autostart: v.Autostart, Persistent: v.Persistent}
	}
	return out
}

// hostInfoOut is what the agent says about its host.
type hostInfoOut struct {
	HostID     string    `json:"host_id"`
	Hostname   string    `json:"hostname,omitempty"`
	Hypervisor string    `json:"hypervisor,omitempty"`
	Libvirt    string    `json:"libvirt,omitempty"`
	Time       time.Time `json:"time,omitzero"`
}

func hostInfo(h *vmsg.HostInfo) *hostInfoOut {
	if h == nil {
		return nil
	}
	o := &hostInfoOut{HostID: h.HostID, Hostname: h.Hostname, Hypervisor: h.Hypervisor, Libvirt: h.Libvirt}
	if h.TimeMs != 0 {
		o.Time = time.UnixMilli(h.TimeMs).UTC()
	}
	return o
}

// healthOut is the VMM-I health of one host (auto channel).
type healthOut struct {
	Seen      bool      `json:"seen"`
	Healthy   bool      `json:"healthy"`
	Failures  int       `json:"failures,omitempty"`
	LastError string    `json:"last_error,omitempty"`
	SkipUntil time.Time `json:"skip_until,omitzero"`
	LatencyMs float64   `json:"latency_ms,omitempty"`
}

func health(h client.Health) *healthOut {
	o := &healthOut{Seen: h.Seen, Healthy: h.Healthy, Failures: h.Failures, LastError: h.LastErr, LatencyMs: ms(h.Latency)}
	if !h.Until.IsZero() {
		o.SkipUntil = h.Until.UTC()
	}
	return o
}

// alertRow is one alert with its host.
type alertRow struct {
	Time      time.Time `json:"time"`
	Host      string    `json:"host"`
	Principal string    `json:"principal,omitempty"`
	VM        string    `json:"vm,omitempty"`
	Action    string    `json:"action"`
	Reason    string    `json:"reason"`
}

// alertOut takes the inventory's host name; the alert's own host field
// (the agent's host id) is not shown twice.
func alertOut(host string, a *vmsg.Alert) alertRow {
	return alertRow{Time: time.UnixMilli(a.TimeMs).UTC(), Host: host, Principal: a.Principal, VM: a.VM, Action: a.Action, Reason: a.Reason}
}

// vmResult is the output of a vm command.
type vmResult struct {
	Host    string `json:"host"`
	Command string `json:"command"`
	VM      string `json:"vm,omitempty"`
	OK      bool   `json:"ok"`
	Via     string `json:"via"`
	// Executed is the channel that carried the run, where known; SentVia
	// every channel the request was handed to, on a failover.
	Executed   string   `json:"executed_via,omitempty"`
	SentVia    []string `json:"sent_via,omitempty"`
	LatencyMs  float64  `json:"latency_ms"`
	RequestID  string   `json:"request_id"`
	Challenged bool     `json:"challenged,omitempty"`
	VMs        []vmOut  `json:"vms,omitempty"`
	// Metadata is what the agent recorded with the request (--meta), and
	// VMSOOBI/VMSVMMI the VMS addresses it recorded.
	Metadata map[string]string `json:"metadata,omitempty"`
	VMSOOBI  string            `json:"vms_oob_i,omitempty"`
	VMSVMMI  string            `json:"vms_vmm_i,omitempty"`
}

// hostRow is one line of host list / host status / watch.
type hostRow struct {
	Name      string  `json:"name"`
	HostID    string  `json:"host_id"`
	VMMI      string  `json:"vmmi,omitempty"`
	BMC       string  `json:"bmc,omitempty"`
	OK        *bool   `json:"ok,omitempty"`
	Via       string  `json:"via,omitempty"`
	LatencyMs float64 `json:"latency_ms,omitempty"`
	// ClockOffsetMs is the host's clock minus this VMS's (to within half
	// the latency), when the answer carried the host's time.
	ClockOffsetMs *float64     `json:"clock_offset_ms,omitempty"`
	Info          *hostInfoOut `json:"info,omitempty"`
	Error         string       `json:"error,omitempty"`
	Health        *healthOut   `json:"vmmi_health,omitempty"`
	VMs           []vmOut      `json:"vms,omitempty"`
	err           error
}

// vmTable prints VMs as vm list / vm status show them.
func vmTable(w io.Writer, vms []vmOut) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tVCPUS\tMEMORY\tUPTIME\tCPU TIME\tAUTOSTART\tPERSISTENT")
	for _, v := range vms {
		state := v.State
		if v.Reason != "" && v.Reason != "unknown" {
			state += " (" + v.Reason + ")"
		}
		up := "-"
		if v.UptimeS > 0 {
			up = (time.Duration(v.UptimeS) * time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d MiB\t%s\t%s\t%s\t%s\n", v.Name, state, v.VCPUs, v.MemoryKiB/1024, up,
			(time.Duration(v.CPUTimeMs) * time.Millisecond).Round(10*time.Millisecond), yesNo(v.Autostart), yesNo(v.Persistent))
	}
	tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
