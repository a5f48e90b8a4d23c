package bmc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ooblab/ooblab/bmcsim/lan"
)

// The chassis, boot option and SEL operations below serve the BMC's other
// front ends (bmcsim/redfish through bmcsim/app): the same state, power
// driver and rules the IPMI commands use.

// ErrNoDiag is returned by ChassisControl for a diagnostic interrupt when
// the power driver cannot send one (no system interface).
var ErrNoDiag = errors.New("the managed system takes no diagnostic interrupt (no system interface)")

// Chassis Control actions (IPMI v2.0 §28.3).
const (
	ChassisPowerDown     = 0x00
	ChassisPowerUp       = 0x01
	ChassisPowerCycle    = 0x02
	ChassisHardReset     = 0x03
	ChassisDiagInterrupt = 0x04
	ChassisSoftShutdown  = 0x05
)

// ChassisControl carries out a Chassis Control action exactly as the IPMI
// command does (the power driver, a once-only boot device used by a power
// up, cycle or reset), and returns once the driver acted.
func (b *BMC) ChassisControl(ctx context.Context, action byte) error {
	_, cc, err := b.handleChassisControl(ctx, nil, []byte{action})
	switch {
	case err != nil:
		return err
	case cc == types.CodeIllegalCommand && action == ChassisDiagInterrupt:
		return ErrNoDiag
	case cc != types.CodeOK:
		return fmt.Errorf("chassis control %#02x: completion code %#02x", action, uint8(cc))
	}
	return nil
}

// SetBootFlags sets boot options parameter 5 (5 bytes) as Set System Boot
// Options does: valid again, and a once-only boot's minute starts now.
func (b *BMC) SetBootFlags(data [5]byte) {
	o := b.boot
	o.mu.Lock()
	defer o.mu.Unlock()
	o.expireLocked()
	o.invalid &^= 1 << 5
	o.flagsSet = o.now()
	copy(o.params[5], data[:])
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

// BeginLogin and EndLogin account a login another channel (Redfish)
// checks, in the LAN channel's book (lan.Logins.BeginLogin): one count of
// a user's failures over every channel.
func (b *BMC) BeginLogin(user, ip string) (time.Duration, lan.LoginTicket) {
	return b.books.Logins.BeginLogin(user, ip)
}

// EndLogin settles an attempt BeginLogin let through.
func (b *BMC) EndLogin(user, ip string, t lan.LoginTicket, ok bool) time.Time {
	return b.books.Logins.EndLogin(user, ip, t, ok)
}
