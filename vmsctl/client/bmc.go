package client

// The host through its BMC: chassis power and the SEL, over the same RMCP+
// session setup as the OOB-I channel (dialBMC) with the inventory's BMC
// credentials. These are plain IPMI commands (Chassis 0x00, Storage 0x0A)
// that every BMC has: an operator who has lost the management network
// still sees and drives the host's power and reads its event log.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/command/chassis"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ooblab/ooblab/internal/oem"
)

// PowerAction is a chassis control.
type PowerAction string

// Power actions (IPMI v2.0 §28.3 Chassis Control).
const (
	PowerOn    PowerAction = "on"    // power up
	PowerOff   PowerAction = "off"   // power down at once
	PowerCycle PowerAction = "cycle" // off, then on
	PowerReset PowerAction = "reset" // hard reset
	PowerSoft  PowerAction = "soft"  // soft shutdown: ACPI power button to the OS
)

// PowerActions lists the actions in the order the command line shows them.
var PowerActions = []PowerAction{PowerOn, PowerOff, PowerCycle, PowerReset, PowerSoft}

func (a PowerAction) control() (chassis.ChassisControl, error) {
	switch a {
	case PowerOn:
		return chassis.ChassisControlPowerUp, nil
	case PowerOff:
		return chassis.ChassisControlPowerDown, nil
	case PowerCycle:
		return chassis.ChassisControlPowerCycle, nil
	case PowerReset:
		return chassis.ChassisControlHardReset, nil
	case PowerSoft:
		return chassis.ChassisControlSoftShutdown, nil
	}
	return 0, fmt.Errorf("unknown power action %q: want on, off, cycle, reset or soft", a)
}

// PowerStatus is the host's chassis status as its BMC reports it.
type PowerStatus struct {
	On bool
	// LastEvent names the last power event the BMC recorded: "command",
	// "power fault", "interlock", "overload", "ac failed" or "".
	LastEvent string
	Fault     bool // power fault or power control fault
}

// ErrBMCUnreachable: the host's BMC did not answer (wraps ErrUnreachable).
var ErrBMCUnreachable = fmt.Errorf("BMC: %w", ErrUnreachable)

// withBMC opens a session with host's BMC as the inventory's user at
// OPERATOR privilege, runs fn and closes the session.
func (c *Client) withBMC(ctx context.Context, host string, fn func(*client.Client) error) error {
	return c.withBMCAs(ctx, host, false, fn)
}

// withBMCAs is withBMC; with console, as the inventory's console user
// (bmc.console_user, or bmc.user without one) at ADMINISTRATOR privilege,
// the least that may activate SOL on a BMC with bmcsim's defaults.
func (c *Client) withBMCAs(ctx context.Context, host string, console bool, fn func(*client.Client) error) error {
	t, err := c.Target(host)
	if err != nil {
		return err
	}
	var opt OOBOptions
	opt.defaults()
	b := t.Host.BMC
	user, passFile, priv := b.User, b.PasswordFile, types.PrivilegeLevelOperator
	if console {
		priv = types.PrivilegeLevelAdministrator
		if b.ConsoleUser != "" {
			user, passFile = b.ConsoleUser, b.ConsolePasswordFile
		}
	}
	s, err := dialBMCAs(ctx, t, opt, user, passFile, priv)
	if err != nil && console && b.ConsoleUser == "" && errors.Is(err, ErrUnauthorized) {
		return fmt.Errorf("%w (the serial console needs a BMC account at ADMINISTRATOR privilege, bmcsim's default sol_privilege: "+
			"give host %s's bmc.console_user and bmc.console_password_file in the inventory)", err, host)
	}
	if err != nil {
		if errors.Is(err, ErrUnauthorized) || t.Host.BMC.Addr == "" {
			return err
		}
		return fmt.Errorf("%w: host %s: %w", ErrBMCUnreachable, host, err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = s.Close(cctx)
	}()
	return fn(s)
}

// HostPower reads host's power state from its BMC (Get Chassis Status).
func (c *Client) HostPower(ctx context.Context, host string) (*PowerStatus, error) {
	if c.oobOpt.Transport == TransportRedfish {
		return c.hostPowerRedfish(ctx, host) // hostredfish.go
	}
	var st *PowerStatus
	err := c.withBMC(ctx, host, func(s *client.Client) error {
		r, err := s.GetChassisStatus(ctx)
		if err != nil {
			return fmt.Errorf("host %s: get chassis status: %w", host, err)
		}
		st = &PowerStatus{On: r.PowerIsOn, Fault: r.PowerFault || r.PowerControlFault}
		switch {
		case r.LastPowerOnByCommand:
			st.LastEvent = "command"
		case r.LastPowerDownByPowerFault:
			st.LastEvent = "power fault"
		case r.LastPowerDownByPowerInterlockActivated:
			st.LastEvent = "interlock"
		case r.LastPowerDownByPowerOverload:
			st.LastEvent = "overload"
		case r.ACFailed:
			st.LastEvent = "ac failed"
		}
		return nil
	})
	return st, err
}

// controlTimeout and controlRetries bound one Chassis Control exchange.
const (
	controlTimeout = time.Second
	controlRetries = 4
)

// HostPowerControl sends a chassis control to host's BMC. The BMC answers
// when it has passed the control on; the host reaches the new state later
// (a soft shutdown only when its OS acts on the power button).
func (c *Client) HostPowerControl(ctx context.Context, host string, a PowerAction) error {
	ctl, err := a.control()
	if err != nil {
		return err
	}
	if c.oobOpt.Transport == TransportRedfish {
		return c.hostPowerControlRedfish(ctx, host, a)
	}
	return c.withBMC(ctx, host, func(s *client.Client) error {
		// A BMC may take a second or more to act on a chassis control
		// before it answers (bmcsim resets the QEMU guest first: ~1 s for
		// a PVH kernel under TCG), longer than the OOB-I's 3 × 250 ms;
		// wait as ipmitool does (lanplus: 1 s, 4 retries). The BMC's
		// reply cache answers a retransmission from the first run.
		s.WithTimeout(controlTimeout).WithRetry(controlRetries)
		if _, err := s.ChassisControl(ctx, ctl); err != nil {
			return fmt.Errorf("host %s: power %s: %w", host, a, err)
		}
		return nil
	})
}

// SELEntry is one System Event Log record.
type SELEntry struct {
	ID   uint16
	Type uint8 // record type: 0x02 system event, 0xC0-0xDF OEM timestamped, 0xE0-0xFF OEM
	// Time is the record's timestamp (zero for non-timestamped OEM records).
	Time time.Time
	// Standard (type 0x02) records.
	GeneratorID  uint16
	SensorType   string
	SensorNumber uint8
	Event        string // the event's description, e.g. "State Asserted"
	Deasserted   bool
	// OEM timestamped records.
	ManufacturerID uint32
	// OEM data: bytes 7-15 (OEM timestamped: 10-15) of the record.
	OEMData []byte
	// Alert is hvagent's alert, for an OEM record of the host's IANA
	// number (oem.SELAlert).
	Alert *oem.SELAlert
	// Raw is the 16-byte record.
	Raw []byte
}

// HostSEL reads every record of host's SEL from its BMC, oldest first.
func (c *Client) HostSEL(ctx context.Context, host string) ([]SELEntry, error) {
	t, err := c.Target(host)
	if err != nil {
		return nil, err
	}
	iana := oem.IANA(t.Host.BMC.IANA)
	if iana == 0 {
		iana = oem.DefaultIANA
	}
	if c.oobOpt.Transport == TransportRedfish {
		return c.hostSELRedfish(ctx, host, iana)
	}
	var out []SELEntry
	err = c.withBMC(ctx, host, func(s *client.Client) error {
		info, err := s.GetSELInfo(ctx)
		if err != nil {
			return fmt.Errorf("host %s: get SEL info: %w", host, err)
		}
		if info.Entries == 0 {
			return nil
		}
		for id, n := uint16(0), 0; id != 0xFFFF; n++ {
			if n > int(info.Entries)+16 { // a BMC whose next-record chain loops
				return fmt.Errorf("host %s: SEL has more records than the %d it announced", host, info.Entries)
			}
			r, err := s.GetSELEntry(ctx, 0, id)
			if err != nil {
				return fmt.Errorf("host %s: get SEL entry %#04x: %w", host, id, err)
			}
			e, err := selEntry(r.Data, iana)
			if err != nil {
				return fmt.Errorf("host %s: SEL entry %#04x: %w", host, id, err)
			}
			out = append(out, e)
			id = r.NextRecordID
		}
		return nil
	})
	return out, err
}

// selEntry decodes a 16-byte SEL record (IPMI v2.0 §32).
func selEntry(raw []byte, iana oem.IANA) (SELEntry, error) {
	if len(raw) < 16 {
		return SELEntry{}, fmt.Errorf("record of %d bytes, want 16", len(raw))
	}
	sel, err := types.ParseSEL(raw)
	if err != nil {
		return SELEntry{}, err
	}
	e := SELEntry{ID: sel.RecordID, Type: uint8(sel.RecordType), Raw: append([]byte(nil), raw[:16]...)}
	switch {
	case sel.Standard != nil:
		s := sel.Standard
		e.Time, e.GeneratorID, e.SensorNumber = s.Timestamp, uint16(s.GeneratorID), uint8(s.SensorNumber)
		e.SensorType = s.SensorType.String()
		e.Deasserted = bool(s.EventDir)
		e.Event = s.EventString()
	case sel.OEMTimestamped != nil:
		o := sel.OEMTimestamped
		e.Time, e.ManufacturerID, e.OEMData = o.Timestamp, o.ManufacturerID, append([]byte(nil), o.OEMDefined[:]...)
		if a, ok := oem.ParseSELAlert(raw[:16], iana); ok {
			e.Alert = &a
		}
	case sel.OEMNonTimestamped != nil:
		e.OEMData = append([]byte(nil), raw[3:16]...)
	}
	return e, nil
}
