package ctl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// SignalAgent sends sig (syscall.SIGTERM or syscall.SIGKILL) to the hvagent
// that ooblab-init supervises in host's guest, through the lab shell on the
// guest's second serial port (Exec), and returns the guest pid signalled.
// ooblab-init restarts the agent a second after it exits (the console shows
// "ooblab: hvagent exited rc=N" then "ooblab: hvagent started").
func SignalAgent(ctx context.Context, dir, host string, sig syscall.Signal) (int, error) {
	name := map[syscall.Signal]string{syscall.SIGTERM: "TERM", syscall.SIGKILL: "KILL",
		syscall.SIGSTOP: "STOP", syscall.SIGCONT: "CONT"}[sig]
	if name == "" {
		return 0, fmt.Errorf("signal %v: the lab sends hvagent TERM, KILL, STOP or CONT only", sig)
	}
	var out strings.Builder
	script := `pid=$(cat /run/hvagent.pid 2>/dev/null) && [ -n "$pid" ] && kill -s ` + name + ` "$pid" && echo "pid=$pid"`
	rc, err := Exec(ctx, dir, host, script, &out)
	if err != nil {
		return 0, err
	}
	if rc != 0 {
		return 0, fmt.Errorf("%s: no hvagent running to signal (rc=%d): %s", host, rc, strings.TrimSpace(out.String()))
	}
	line := strings.TrimSpace(out.String())
	pid, err := strconv.Atoi(strings.TrimPrefix(line, "pid="))
	if err != nil || !strings.HasPrefix(line, "pid=") {
		return 0, fmt.Errorf("%s: lab shell: unexpected answer %q", host, line)
	}
	return pid, nil
}

// RestartBMCSim stops the lab's bmcsim with sig (SIGKILL: a crash; SIGTERM:
// a clean stop), waits until it is gone, and starts it again the way `lab
// up` did, with the same state folders (its queue journals survive) and its
// log appended to. It returns once every BMC's chardev port listens again;
// QEMU reconnects to it by itself (within a second).
//
// With inQueue1Write, it does not signal bmcsim: it arms every BMC's fault
// hook (fault_hooks, bmcsim/app.FaultKillInQueue1Write) and waits until
// bmcsim killed itself inside the next VMS's Write Queue 1 — after the
// record was journalled, before the VMS got its answer — then starts it.
func RestartBMCSim(ctx context.Context, dir string, sig syscall.Signal, inQueue1Write bool) (pid int, err error) {
	st, err := loadState(dir)
	if err != nil {
		return 0, err
	}
	if len(st.BMCSim.Argv) == 0 {
		return 0, errors.New("lab.json does not say how bmcsim was started (a lab from an older bin/lab): lab down and up")
	}
	if inQueue1Write {
		if err := armQueue1WriteKill(ctx, dir, st); err != nil {
			return 0, err
		}
	} else if processAlive(st.BMCSim.Pid) {
		if err := syscall.Kill(st.BMCSim.Pid, sig); err != nil {
			return 0, fmt.Errorf("bmcsim pid %d: %w", st.BMCSim.Pid, err)
		}
		if err := stopPid(ctx, st.BMCSim.Pid, 10*time.Second); err != nil {
			return 0, fmt.Errorf("bmcsim: %w", err)
		}
	}
	argv := st.BMCSim.Argv
	pid, err = startDetachedLog(argv[0], argv[1:], filepath.Join(dir, "bmcsim.log"), filepath.Join(dir, "bmcsim.pid"), syscall.O_APPEND)
	if err != nil {
		return 0, fmt.Errorf("start bmcsim: %w", err)
	}
	st.BMCSim.Pid = pid
	if err := saveState(dir, st); err != nil {
		return pid, err
	}
	for _, h := range st.Hosts {
		if err := waitTCP(ctx, h.BMCKCS, 10*time.Second, pid); err != nil {
			return pid, fmt.Errorf("bmcsim (log %s/bmcsim.log): %w", dir, err)
		}
	}
	return pid, nil
}

// armQueue1WriteKill arms each BMC's fault hook and waits until bmcsim is
// gone; the files are removed again if it never fires.
func armQueue1WriteKill(ctx context.Context, dir string, st *State) error {
	var armed []string
	for _, h := range st.Hosts {
		f := filepath.Join(dir, h.Name, "bmc-state", faultKillInQueue1Write)
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			return fmt.Errorf("arm the fault hook: %w", err)
		}
		armed = append(armed, f)
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for processAlive(st.BMCSim.Pid) {
		select {
		case <-ctx.Done():
			for _, f := range armed {
				_ = os.Remove(f)
			}
			return fmt.Errorf("bmcsim pid %d did not die inside a Write Queue 1 (is fault_hooks set? was a VMS writing?): %w", st.BMCSim.Pid, ctx.Err())
		case <-t.C:
		}
	}
	for _, f := range armed { // the other BMCs' hooks did not fire
		_ = os.Remove(f)
	}
	return nil
}

// faultKillInQueue1Write is bmcsim/app.FaultKillInQueue1Write (the lab
// does not link bmcsim).
const faultKillInQueue1Write = "fault-kill-in-queue1-write"
