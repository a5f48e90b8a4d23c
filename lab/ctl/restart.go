package ctl

import (
	"context"
	"errors"
	"fmt"
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
func RestartBMCSim(ctx context.Context, dir string, sig syscall.Signal) (pid int, err error) {
	st, err := loadState(dir)
	if err != nil {
		return 0, err
	}
	if len(st.BMCSim.Argv) == 0 {
		return 0, errors.New("lab.json does not say how bmcsim was started (a lab from an older bin/lab): lab down and up")
	}
	if processAlive(st.BMCSim.Pid) {
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
