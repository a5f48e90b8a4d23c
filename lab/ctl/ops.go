package ctl

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/ooblab/ooblab/internal/qmp"
	"github.com/ooblab/ooblab/lab/qemu"
)

// Down stops every process of the lab in dir and waits until they are gone.
func Down(ctx context.Context, dir string, out io.Writer, log *slog.Logger) error {
	st, err := loadState(dir)
	if err != nil {
		return err
	}
	return stopState(ctx, dir, st, out, log)
}

// stopState stops the processes st names and removes the lab's state files.
// Up's failure path calls it with its own run's state, so that a failed
// `lab up` stops only what that run started.
func stopState(ctx context.Context, dir string, st *State, out io.Writer, log *slog.Logger) error {
	var errs []error
	for _, h := range st.Hosts {
		if !processAlive(h.QEMU.Pid) {
			continue
		}
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if m, err := qmp.Dial(qctx, "unix", filepath.Join(h.RunDir, "qmp.sock"), log); err == nil {
			_ = m.Quit(qctx)
			m.Close()
		}
		cancel()
		if err := stopPid(ctx, h.QEMU.Pid, 10*time.Second); err != nil {
			errs = append(errs, fmt.Errorf("%s qemu: %w", h.Name, err))
		} else {
			fmt.Fprintf(out, "stopped %s (qemu pid %d)\n", h.Name, h.QEMU.Pid)
		}
	}
	if processAlive(st.UI.Pid) {
		if err := stopPid(ctx, st.UI.Pid, 5*time.Second); err != nil {
			errs = append(errs, fmt.Errorf("lab ui: %w", err))
		} else {
			fmt.Fprintf(out, "stopped lab ui (pid %d)\n", st.UI.Pid)
		}
	}
	if processAlive(st.BMCSim.Pid) {
		if err := stopPid(ctx, st.BMCSim.Pid, 10*time.Second); err != nil {
			errs = append(errs, fmt.Errorf("bmcsim: %w", err))
		} else {
			fmt.Fprintf(out, "stopped bmcsim (pid %d)\n", st.BMCSim.Pid)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("lab down: %v", errs)
	}
	_ = os.Remove(filepath.Join(dir, "lab.json"))
	_ = os.Remove(filepath.Join(dir, "bmcsim.pid"))
	return nil
}

// stopPid sends SIGTERM, then SIGKILL after grace, and waits for the exit.
func stopPid(ctx context.Context, pid int, grace time.Duration) error {
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			deadline = time.Now().Add(5 * time.Second)
			grace = 0
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if grace == 0 && time.Now().After(deadline) && processAlive(pid) {
			return fmt.Errorf("pid %d survives SIGKILL", pid)
		}
	}
	return nil
}

// SetLink plugs (up) or unplugs a host's VMM-I NIC through QMP set_link.
func SetLink(ctx context.Context, dir, host, link string, up bool, log *slog.Logger) error {
	if link != "vmmi" {
		return fmt.Errorf("unknown link %q (the lab has: vmmi)", link)
	}
	st, err := loadState(dir)
	if err != nil {
		return err
	}
	h, err := st.host(host)
	if err != nil {
		return err
	}
	m, err := qmp.Dial(ctx, "unix", filepath.Join(h.RunDir, "qmp.sock"), log)
	if err != nil {
		return fmt.Errorf("%s: QEMU monitor: %w", host, err)
	}
	defer m.Close()
	if err := m.SetLink(ctx, "vmmi-nic", up); err != nil {
		return fmt.Errorf("%s: set_link: %w", host, err)
	}
	h.VMMILink = up
	return saveState(dir, st)
}

// HostStatus is one row of `lab status`.
type HostStatus struct {
	Name      string   `json:"name"`
	QEMU      string   `json:"qemu"`
	BMCLAN    string   `json:"bmc_lan"`
	VMMI      string   `json:"vmmi"`
	VMMILink  bool     `json:"vmmi_link"`
	VMMIState string   `json:"vmmi_channel"`
	OOBState  string   `json:"oob_channel"`
	VMs       []string `json:"vms"`
}

// Status reports the lab's processes and, with probe, both channels.
func Status(ctx context.Context, dir string, log *slog.Logger, probe func(ctx context.Context, host string) (vmmi, oob string, vms []string)) (*State, []HostStatus, error) {
	st, err := loadState(dir)
	if err != nil {
		return nil, nil, err
	}
	var rows []HostStatus
	for _, h := range st.Hosts {
		r := HostStatus{Name: h.Name, BMCLAN: h.BMCLAN, VMMI: h.VMMI, VMMILink: h.VMMILink, QEMU: "stopped"}
		if processAlive(h.QEMU.Pid) {
			r.QEMU = "running"
			qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			if m, err := qmp.Dial(qctx, "unix", filepath.Join(h.RunDir, "qmp.sock"), log); err == nil {
				if s, err := m.QueryStatus(qctx); err == nil {
					r.QEMU = s.Status
				}
				m.Close()
			}
			cancel()
		}
		if probe != nil {
			r.VMMIState, r.OOBState, r.VMs = probe(ctx, h.Name)
		}
		rows = append(rows, r)
	}
	return st, rows, nil
}

// Exec runs a shell script as root inside host's guest, through the lab
// shell on its second serial port (qemu.Exec), writes its output to out and
// returns its exit status.
func Exec(ctx context.Context, dir, host, script string, out io.Writer) (int, error) {
	st, err := loadState(dir)
	if err != nil {
		return -1, err
	}
	h, err := st.host(host)
	if err != nil {
		return -1, err
	}
	rc, err := qemu.Exec(ctx, h.RunDir, script, out)
	if err != nil {
		return rc, fmt.Errorf("%s: %w", host, err)
	}
	return rc, nil
}

// ConsolePath and LogPaths name a host's files.
func ConsolePath(dir, host string) (string, error) {
	st, err := loadState(dir)
	if err != nil {
		return "", err
	}
	h, err := st.host(host)
	if err != nil {
		return "", err
	}
	return filepath.Join(h.RunDir, "console.log"), nil
}

// BMCSimAlive reports whether the lab's bmcsim runs.
func BMCSimAlive(st *State) bool { return processAlive(st.BMCSim.Pid) }
