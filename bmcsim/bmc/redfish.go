package bmc

import (
	"context"
	"errors"

	"github.com/bougou/go-ipmi/pkg/types"
)

// The chassis and SEL operations below serve the BMC's other front ends
// (bmcsim/redfish through bmcsim/app): the same state and power driver the
// IPMI Chassis and Storage commands use.

// NMIDriver is a PowerDriver that can also inject an NMI (the QEMU guest
// behind the system interface).
type NMIDriver interface {
	NMI(ctx context.Context) error
}

// ErrNoNMI is returned by ChassisNMI when the power driver cannot send one.
var ErrNoNMI = errors.New("the managed system takes no NMI (no system interface)")

// ChassisPower powers the managed system on or off (Chassis Control 01h/00h).
func (s *BMC) ChassisPower(ctx context.Context, on bool) error { return s.chassis.SetPower(ctx, on) }

// ChassisPowerCycle is Chassis Control 02h.
func (s *BMC) ChassisPowerCycle(ctx context.Context) error { return s.chassis.PowerCycle(ctx) }

// ChassisHardReset is Chassis Control 03h.
func (s *BMC) ChassisHardReset(ctx context.Context) error { return s.chassis.ColdReset(ctx) }

// ChassisSoftShutdown is Chassis Control 05h (ACPI power button).
func (s *BMC) ChassisSoftShutdown(ctx context.Context) error { return s.chassis.WarmReset(ctx) }

// ChassisNMI is Chassis Control 04h (diagnostic interrupt).
func (s *BMC) ChassisNMI(ctx context.Context) error {
	s.chassis.mu.Lock()
	d := s.chassis.driver
	s.chassis.lastCmd = "diagnostic interrupt"
	s.chassis.mu.Unlock()
	n, ok := d.(NMIDriver)
	if !ok {
		return ErrNoNMI
	}
	return n.NMI(ctx)
}

// BootFlags returns the boot flags (Get System Boot Options parameter 5).
func (s *BMC) BootFlags() types.BootOptionParam_BootFlags {
	f, _ := s.chassis.GetBootFlags(context.Background())
	return *f
}

// SetBootFlags sets them as Set System Boot Options parameter 5 does.
func (s *BMC) SetBootFlags(f types.BootOptionParam_BootFlags) {
	_ = s.chassis.SetBootFlags(context.Background(), &f)
}

// SetOnAdd sets the function called (outside the SEL's lock) with every
// record added.
func (s *SEL) SetOnAdd(f func(rec [16]byte)) {
	s.mu.Lock()
	s.onAdd = f
	s.mu.Unlock()
}

// Clear erases every record (Clear SEL, "initiate erase").
func (s *SEL) Clear() {
	s.mu.Lock()
	s.entries = nil
	s.overflow = false
	s.lastErase = s.Time()
	s.mu.Unlock()
}

// Capacity is the most records the SEL holds.
func (s *SEL) Capacity() int { return s.capacity }
