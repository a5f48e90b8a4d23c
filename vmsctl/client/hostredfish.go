package client

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/stmcginnis/gofish"
	"github.com/stmcginnis/gofish/schemas"

	"github.com/ooblab/ooblab/internal/oem"
)

// host power and host sel over Redfish (--oob-transport redfish): the
// BMC's ComputerSystem and its SEL LogService, through gofish, as the
// inventory's BMC user.

// withRedfish runs fn with a gofish client of host's BMC.
func (c *Client) withRedfish(ctx context.Context, host string, fn func(*gofish.APIClient) error) error {
	t, err := c.Target(host)
	if err != nil {
		return err
	}
	o := NewOOB(c.oobOpt, c.log)
	defer o.Close()
	rc, err := o.redfishClient(ctx, t)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBMCUnreachable, err)
	}
	return fn(rc.WithContext(ctx))
}

func redfishSystem(rc *gofish.APIClient) (*schemas.ComputerSystem, error) {
	ss, err := rc.Service.Systems()
	if err != nil {
		return nil, err
	}
	if len(ss) != 1 {
		return nil, fmt.Errorf("BMC lists %d systems, want 1", len(ss))
	}
	return ss[0], nil
}

func (c *Client) hostPowerRedfish(ctx context.Context, host string) (*PowerStatus, error) {
	var st *PowerStatus
	err := c.withRedfish(ctx, host, func(rc *gofish.APIClient) error {
		sys, err := redfishSystem(rc)
		if err != nil {
			return fmt.Errorf("host %s: %w", host, err)
		}
		st = &PowerStatus{On: sys.PowerState == schemas.OnPowerState}
		return nil
	})
	return st, err
}

// redfishResets maps power actions onto ResetTypes.
var redfishResets = map[PowerAction]schemas.ResetType{
	PowerOn:    schemas.OnResetType,
	PowerOff:   schemas.ForceOffResetType,
	PowerCycle: schemas.PowerCycleResetType,
	PowerReset: schemas.ForceRestartResetType,
	PowerSoft:  schemas.GracefulShutdownResetType,
}

func (c *Client) hostPowerControlRedfish(ctx context.Context, host string, a PowerAction) error {
	return c.withRedfish(ctx, host, func(rc *gofish.APIClient) error {
		sys, err := redfishSystem(rc)
		if err != nil {
			return fmt.Errorf("host %s: %w", host, err)
		}
		if _, err := sys.Reset(redfishResets[a]); err != nil {
			return fmt.Errorf("host %s: power %s: %w", host, a, err)
		}
		return nil
	})
}

func (c *Client) hostSELRedfish(ctx context.Context, host string, iana oem.IANA) ([]SELEntry, error) {
	var out []SELEntry
	err := c.withRedfish(ctx, host, func(rc *gofish.APIClient) error {
		ms, err := rc.Service.Managers()
		if err != nil || len(ms) == 0 {
			return fmt.Errorf("host %s: managers: %v", host, err)
		}
		ls, err := ms[0].LogServices()
		if err != nil {
			return fmt.Errorf("host %s: log services: %w", host, err)
		}
		for _, l := range ls {
			if l.ID != "SEL" {
				continue
			}
			es, err := l.Entries()
			if err != nil {
				return fmt.Errorf("host %s: SEL entries: %w", host, err)
			}
			for _, e := range es {
				var o struct{ Ooblab struct{ Record string } }
				_ = json.Unmarshal(e.OEM, &o) // checked through the record below
				raw, herr := hex.DecodeString(o.Ooblab.Record)
				if herr != nil || len(raw) != 16 {
					return fmt.Errorf("host %s: SEL entry %s carries no 16-byte record (Oem.Ooblab.Record)", host, e.ID)
				}
				se, err := selEntry(raw, iana)
				if err != nil {
					return fmt.Errorf("host %s: SEL entry %s: %w", host, e.ID, err)
				}
				out = append(out, se)
			}
			return nil
		}
		return fmt.Errorf("host %s: the BMC has no SEL log service", host)
	})
	return out, err
}
