package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"syscall"
	"time"

	"github.com/ooblab/ooblab/bmcsim/bmc"
	"github.com/ooblab/ooblab/bmcsim/kcs"
	"github.com/ooblab/ooblab/internal/qmp"
)

// hostPower drives the QEMU guest behind a BMC: off, reset and graceful
// shutdown through the ipmi-bmc-extern chardev (as a real BMC pulls the
// power pins), on through the QEMU monitor (QEMU runs with -no-shutdown, so a
// powered-off guest waits, stopped, to be reset and continued).
//
// It keeps one QMP connection (mon, nil without a monitor configured) for
// every command: QMP serves one client at a time, and a dial and handshake
// per Get Chassis Status cost up to seconds on a loaded TCG host, more than
// an IPMI client waits (vmsctl: 3 × 250 ms; fresh-clone ci13 got no answer).
type hostPower struct {
	kcs *kcs.Server
	mon *qmp.Monitor
	log *slog.Logger
}

var _ bmc.PowerDriver = (*hostPower)(nil)

func newHostPower(srv *kcs.Server, qmpPath string, log *slog.Logger) *hostPower {
	p := &hostPower{kcs: srv, log: log}
	if qmpPath != "" {
		p.mon = qmp.New("unix", qmpPath, log)
	}
	return p
}

func (p *hostPower) monitor() (*qmp.Monitor, error) {
	if p.mon == nil {
		return nil, errors.New("no QEMU monitor configured for this BMC (qmp in the BMC config)")
	}
	return p.mon, nil
}

// stateTimeout bounds the QMP query behind Get Chassis Status: past it the
// BMC answers from the state it recorded.
const stateTimeout = 300 * time.Millisecond

// noQEMU tells a monitor error that means no QEMU process is there (the
// machine is off) from one that means QEMU did not answer in time.
func noQEMU(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, qmp.ErrClosed)
}

func (p *hostPower) State(ctx context.Context) (bool, bool) {
	if p.mon == nil {
		return p.kcs.Connected(), true
	}
	ctx, cancel := context.WithTimeout(ctx, stateTimeout)
	defer cancel()
	st, err := p.mon.QueryStatus(ctx)
	switch {
	case err == nil:
		return st.Running, true
	case noQEMU(err):
		return false, true
	default:
		return false, false
	}
}

// powerOpTimeout bounds one power operation: go-ipmi hands handlers a
// context without a deadline, and the LAN session waits on the handler.
const powerOpTimeout = 10 * time.Second

func (p *hostPower) PowerOn(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, powerOpTimeout)
	defer cancel()
	err := p.powerOn(ctx)
	if err != nil {
		p.log.Warn("chassis power on failed", "err", err)
	}
	return err
}

func (p *hostPower) powerOn(ctx context.Context) error {
	t0 := time.Now()
	m, err := p.monitor()
	if err != nil {
		if p.kcs.Connected() {
			return nil // it runs
		}
		return fmt.Errorf("power on: %w", err)
	}
	st, err := m.QueryStatus(ctx)
	if err != nil {
		if noQEMU(err) && p.kcs.Connected() {
			return nil // it runs
		}
		return fmt.Errorf("power on: %w", err)
	}
	if st.Running {
		return nil
	}
	from := st.Status
	// A machine that was off boots afresh: reset it from any state but
	// prelaunch (never run). A guest left "paused" by whatever stopped it
	// must not resume where it stopped (seen once in e2e after a hard off:
	// the old kernel resumed with a 60 s time jump).
	if st.Status != "prelaunch" {
		if err := m.SystemReset(ctx); err != nil {
			return fmt.Errorf("power on: reset: %w", err)
		}
		// QEMU handles the reset request in its main loop; cont is refused
		// until the machine has left the shutdown state.
		for st.Status == "shutdown" || st.Status == "guest-panicked" {
			select {
			case <-ctx.Done():
				return fmt.Errorf("power on: machine still %s after reset: %w", st.Status, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
			if st, err = m.QueryStatus(ctx); err != nil {
				return fmt.Errorf("power on: %w", err)
			}
		}
	}
	if err := m.Execute(ctx, "cont", nil, nil); err != nil {
		return fmt.Errorf("power on: cont: %w", err)
	}
	p.log.Info("chassis power on", "via", "qmp", "from", from, "took", time.Since(t0).Round(time.Millisecond))
	return nil
}

func (p *hostPower) PowerOff(ctx context.Context) error {
	if err := p.kcs.PowerOff(); err != nil {
		if errors.Is(err, kcs.ErrNotConnected) {
			return nil // already off
		}
		return err
	}
	t0 := time.Now()
	err := p.waitOff(ctx)
	p.log.Info("chassis power off", "via", "kcs", "took", time.Since(t0).Round(time.Millisecond))
	return err
}

// waitOff waits (bounded) until QEMU has acted on the POWEROFF it was sent:
// QEMU takes it in its main loop, so a power cycle's power on could reach
// the monitor first, reset and continue a machine that then stopped for
// good (seen in a fresh-clone e2e run: the host never came back).
func (p *hostPower) waitOff(ctx context.Context) error {
	m := p.mon
	if m == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, powerOpTimeout)
	defer cancel()
	for {
		// "shutdown" only: an answer that merely says not running (seen
		// with an empty status right after the POWEROFF) came before QEMU
		// acted on it.
		st, err := m.QueryStatus(ctx)
		if noQEMU(err) || (err == nil && st.Status == "shutdown") {
			return nil // gone, or stopped by the POWEROFF
		}
		select {
		case <-ctx.Done():
			// Power on (of a cycle) still resets and continues it.
			p.log.Warn("power off: QEMU did not report the machine shut down", "status", st.Status, "waited", powerOpTimeout)
			return nil
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (p *hostPower) Reset(ctx context.Context) error {
	if err := p.kcs.Reset(); err != nil {
		return err
	}
	p.log.Info("chassis hard reset", "via", "kcs")
	return nil
}

func (p *hostPower) GracefulShutdown(ctx context.Context) error {
	if err := p.kcs.GracefulShutdown(); err != nil {
		return err
	}
	p.log.Info("chassis soft shutdown", "via", "kcs")
	return nil
}
