package cmd

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/ooblab/ooblab/lab/simfleet"
)

// sim is `lab sim --hosts N`: a simulated fleet without QEMU (lab/simfleet)
// that runs in the foreground until Ctrl-C, with its own inventory under
// the state folder (never the QEMU lab's inventory.json).
func (e *env) sim() *cobra.Command {
	var o simfleet.Options
	c := &cobra.Command{
		Use:   "sim",
		Short: "run N simulated hosts without QEMU (bmcsim --fleet + hvagent's code on libvirt test:///default) until Ctrl-C",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.BinDir == "" {
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				o.BinDir = filepath.Dir(exe)
			}
			o.Dir = filepath.Join(e.dir, "sim")
			if o.LANBase != 0 {
				o.KCSBase = o.LANBase + o.N
			}
			o.HostLog = e.log
			start := time.Now()
			f, err := simfleet.Start(e.ctx, o)
			if err != nil {
				return err
			}
			defer f.Stop()
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "%d simulated hosts up in %.1f s: BMCs h-0 … h-%d on 127.0.0.1:%d-%d (RMCP+, user %s), bmcsim pid %d (log %s)\n",
				f.N, time.Since(start).Seconds(), f.N-1, f.LANBase, f.LANBase+f.N-1, simfleet.User, f.BMCPid, f.BMCLog)
			fmt.Fprintf(out, "inventory: %s\ntry: vmsctl --inventory %s --via oob host status\nCtrl-C stops them.\n", f.Inventory, f.Inventory)
			<-e.ctx.Done()
			return nil
		},
	}
	c.Flags().IntVar(&o.N, "hosts", 10, "number of simulated hosts (and BMCs)")
	c.Flags().StringVar(&o.BinDir, "bin", "", "folder with bmcsim (default: beside lab)")
	c.Flags().IntVar(&o.LANBase, "base-port", 0, "first BMC LAN port, KCS ports follow the LAN range (default: free ports)")
	return c
}

// simPidFile holds the pid of a detached `lab sim` started by `lab up --sim`.
func simPidFile(dir string) string { return filepath.Join(dir, "sim", "pid") }

// simUp is `lab up --sim`: it starts `lab sim` detached (its own session,
// output in <dir>/sim/lab-sim.log), returns once the fleet is up and prints
// where its inventory is. `lab down` stops it.
func (e *env) simUp(cmd *cobra.Command, hosts, basePort int, bin string) error {
	if pid, ok := simRunning(e.dir); ok {
		return fmt.Errorf("a simulated fleet is already up (pid %d): run lab down first", pid)
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	simDir := filepath.Join(e.dir, "sim")
	if err := os.MkdirAll(simDir, 0o700); err != nil {
		return err
	}
	logPath := filepath.Join(simDir, "lab-sim.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	args := []string{"--dir", e.dir, "sim", "--hosts", strconv.Itoa(hosts)}
	if bin != "" {
		args = append(args, "--bin", bin)
	}
	if basePort != 0 {
		args = append(args, "--base-port", strconv.Itoa(basePort))
	}
	child := exec.Command(exe, args...)
	child.Stdout, child.Stderr = logf, logf
	child.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // outlives this command and its terminal
	if err := child.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = child.Wait(); close(exited) }()
	if err := os.WriteFile(simPidFile(e.dir), []byte(strconv.Itoa(child.Process.Pid)+"\n"), 0o600); err != nil {
		_ = child.Process.Kill()
		return err
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	deadline := time.After(5 * time.Minute)
	for {
		b, _ := os.ReadFile(logPath)
		if strings.Contains(string(b), "Ctrl-C stops them.") {
			out := strings.Replace(string(b), "Ctrl-C stops them.", "lab down stops them.", 1)
			fmt.Fprint(cmd.OutOrStdout(), out)
			return nil
		}
		select {
		case <-exited:
			os.Remove(simPidFile(e.dir))
			return fmt.Errorf("lab sim exited before the fleet was up:\n%s", b)
		case <-e.ctx.Done():
			_ = child.Process.Signal(syscall.SIGTERM)
			<-exited
			os.Remove(simPidFile(e.dir))
			return e.ctx.Err()
		case <-deadline:
			_ = child.Process.Signal(syscall.SIGTERM)
			<-exited
			os.Remove(simPidFile(e.dir))
			return fmt.Errorf("simulated fleet not up after 5 minutes; log %s", logPath)
		case <-t.C:
		}
	}
}

// simRunning reports the pid of a detached `lab sim` that is still alive.
func simRunning(dir string) (int, bool) {
	b, err := os.ReadFile(simPidFile(dir))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	// A stale pid file may name a pid the kernel gave to another program
	// since: only a `lab … sim` process for this folder counts (and is ever
	// signalled by lab down).
	cl, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return 0, false
	}
	args := strings.Split(strings.TrimRight(string(cl), "\x00"), "\x00")
	return pid, isSimCmdline(args, dir)
}

// isSimCmdline reports whether args are `lab --dir DIR sim …` for dir.
func isSimCmdline(args []string, dir string) bool {
	if len(args) < 4 || filepath.Base(args[0]) != "lab" && !strings.HasSuffix(args[0], "/lab") {
		return false
	}
	return args[1] == "--dir" && args[2] == dir && args[3] == "sim"
}

// simDown stops a detached `lab sim` (SIGTERM: it stops its hosts and
// bmcsim, then exits) and reports whether there was one.
func (e *env) simDown(out io.Writer) (bool, error) {
	pid, ok := simRunning(e.dir)
	if !ok {
		os.Remove(simPidFile(e.dir))
		return false, nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return false, fmt.Errorf("stop lab sim (pid %d): %w", pid, err)
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	deadline := time.After(30 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		select {
		case <-deadline:
			return true, fmt.Errorf("lab sim (pid %d) still running 30 s after SIGTERM; log %s", pid, filepath.Join(e.dir, "sim", "lab-sim.log"))
		case <-e.ctx.Done():
			return true, e.ctx.Err()
		case <-t.C:
		}
	}
	os.Remove(simPidFile(e.dir))
	fmt.Fprintf(out, "simulated fleet stopped (lab sim pid %d)\n", pid)
	return true, nil
}
