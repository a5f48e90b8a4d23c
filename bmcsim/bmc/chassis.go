package bmc

import (
	"context"
	"errors"
	"sync"

	"github.com/bougou/go-ipmi/pkg/hal"
	"github.com/bougou/go-ipmi/pkg/types"
)

// PowerDriver carries chassis power commands to the managed system: the
// QEMU guest behind the system interface. Without a driver the BMC only
// keeps the state.
type PowerDriver interface {
	// State reports whether the managed system runs; ok is false when the
	// driver cannot tell (the BMC then keeps its own record).
	State(ctx context.Context) (on, ok bool)
	PowerOn(ctx context.Context) error
	PowerOff(ctx context.Context) error
	Reset(ctx context.Context) error
	GracefulShutdown(ctx context.Context) error
}

// ErrNoHost is returned by a PowerDriver when the managed system cannot be
// reached (no QEMU connected).
var ErrNoHost = errors.New("managed system not connected")

// chassis is the HAL behind the Chassis commands: power state kept here,
// actions forwarded to the PowerDriver.
type chassis struct {
	mu       sync.Mutex
	on       bool
	identify uint8
	driver   PowerDriver
	boot     *types.BootOptionParam_BootFlags
	ack      *types.BootOptionParam_BootInfoAcknowledge
	lastCmd  string
}

var _ hal.ChassisHAL = (*chassis)(nil)

func (c *chassis) setDriver(d PowerDriver) {
	c.mu.Lock()
	c.driver = d
	c.mu.Unlock()
}

// SetPowerState records the power state the managed system reports (e.g.
// the guest connected or went away).
func (c *chassis) SetPowerState(on bool) {
	c.mu.Lock()
	c.on = on
	c.mu.Unlock()
}

func (c *chassis) PowerState(ctx context.Context) (bool, error) {
	c.mu.Lock()
	d := c.driver
	on := c.on
	c.mu.Unlock()
	if d != nil {
		if live, ok := d.State(ctx); ok {
			return live, nil
		}
	}
	return on, nil
}

func (c *chassis) do(ctx context.Context, name string, f func(PowerDriver) error, after bool) error {
	c.mu.Lock()
	d := c.driver
	c.lastCmd = name
	c.mu.Unlock()
	if d != nil {
		if err := f(d); err != nil {
			return err
		}
	}
	c.mu.Lock()
	c.on = after
	c.mu.Unlock()
	return nil
}

func (c *chassis) SetPower(ctx context.Context, on bool) error {
	if on {
		return c.do(ctx, "power on", func(d PowerDriver) error { return d.PowerOn(ctx) }, true)
	}
	return c.do(ctx, "power off", func(d PowerDriver) error { return d.PowerOff(ctx) }, false)
}

func (c *chassis) PowerCycle(ctx context.Context) error {
	return c.do(ctx, "power cycle", func(d PowerDriver) error {
		if err := d.PowerOff(ctx); err != nil {
			return err
		}
		return d.PowerOn(ctx)
	}, true)
}

func (c *chassis) ColdReset(ctx context.Context) error {
	return c.do(ctx, "hard reset", func(d PowerDriver) error { return d.Reset(ctx) }, true)
}

// WarmReset is what go-ipmi calls Chassis Control 05h, "soft shutdown via
// ACPI overtemp emulation": a graceful shutdown request to the OS.
func (c *chassis) WarmReset(ctx context.Context) error {
	c.mu.Lock()
	d := c.driver
	c.lastCmd = "soft shutdown"
	c.mu.Unlock()
	if d == nil {
		c.SetPowerState(false)
		return nil
	}
	// The guest turns itself off; its disconnect updates the state.
	return d.GracefulShutdown(ctx)
}

func (c *chassis) Identify(_ context.Context, seconds uint8) error {
	c.mu.Lock()
	c.identify = seconds
	c.mu.Unlock()
	return nil
}

func (c *chassis) IntrusionState(context.Context) (bool, error) { return false, nil }

func (c *chassis) SetBootFlags(_ context.Context, f *types.BootOptionParam_BootFlags) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	cp := *f
	c.boot = &cp
	return nil
}

func (c *chassis) GetBootFlags(context.Context) (*types.BootOptionParam_BootFlags, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.boot == nil {
		return &types.BootOptionParam_BootFlags{}, nil
	}
	cp := *c.boot
	return &cp, nil
}

func (c *chassis) SetBootInfoAcknowledge(_ context.Context, a *types.BootOptionParam_BootInfoAcknowledge) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	cp := *a
	c.ack = &cp
	return nil
}

func (c *chassis) GetBootInfoAcknowledge(context.Context) (*types.BootOptionParam_BootInfoAcknowledge, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ack == nil {
		return &types.BootOptionParam_BootInfoAcknowledge{}, nil
	}
	cp := *c.ack
	return &cp, nil
}
