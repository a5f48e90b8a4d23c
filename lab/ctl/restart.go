package ctl

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// labctlSock is the unix socket, in a host's run folder, at the other end of
// the guest's second serial port (ttyS1), where ooblab-init takes the lab's
// control commands. It exists only in the lab: QEMU makes it, and only the
// lab image listens on ttyS1.
const labctlSock = "labctl.sock"

// SignalAgent sends sig (syscall.SIGTERM or syscall.SIGKILL) to the hvagent
// that ooblab-init supervises in host's guest, over the lab's control line,
// and returns the guest pid signalled. ooblab-init restarts the agent a
// second after it exits (the console shows "ooblab: hvagent exited rc=N"
// then "ooblab: hvagent started").
func SignalAgent(ctx context.Context, dir, host string, sig syscall.Signal) (int, error) {
	name := map[syscall.Signal]string{syscall.SIGTERM: "TERM", syscall.SIGKILL: "KILL"}[sig]
	if name == "" {
		return 0, fmt.Errorf("signal %v: the lab sends hvagent TERM or KILL only", sig)
	}
	st, err := loadState(dir)
	if err != nil {
		return 0, err
	}
	h, err := st.host(host)
	if err != nil {
		return 0, err
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", filepath.Join(h.RunDir, labctlSock))
	if err != nil {
		return 0, fmt.Errorf("%s: lab control line (an image older than the labctl line?): %w", host, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	} else {
		c.SetDeadline(time.Now().Add(30 * time.Second))
	}
	if _, err := fmt.Fprintf(c, "hvagent %s\n", name); err != nil {
		return 0, fmt.Errorf("%s: lab control line: %w", host, err)
	}
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "ok pid="):
			return strconv.Atoi(strings.TrimPrefix(line, "ok pid="))
		case strings.HasPrefix(line, "err "):
			return 0, fmt.Errorf("%s: guest: %s", host, strings.TrimPrefix(line, "err "))
		}
		// Anything else is left over from an earlier, unread answer.
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s: lab control line closed without an answer: %w", host, errors.Join(sc.Err(), errors.New("no answer")))
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
