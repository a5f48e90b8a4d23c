package app

import (
	"context"
	"fmt"

	"github.com/ooblab/ooblab/bmcsim/bmc"
)

var _ bmc.DiagDriver = (*hostPower)(nil)

// Diag pulses the guest's diagnostic interrupt (Chassis Control 04h,
// `ipmitool power diag`): QMP inject-nmi, or the system interface's NMI
// operation without a monitor. The guest kernel logs "NMI received".
func (p *hostPower) Diag(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, powerOpTimeout)
	defer cancel()
	if p.mon != nil {
		if err := p.mon.Execute(ctx, "inject-nmi", nil, nil); err != nil {
			return fmt.Errorf("power diag: %w", err)
		}
		p.log.Info("chassis diagnostic interrupt", "via", "qmp inject-nmi")
		return nil
	}
	if err := p.kcs.SendNMI(); err != nil {
		return fmt.Errorf("power diag: %w", err)
	}
	p.log.Info("chassis diagnostic interrupt", "via", "kcs")
	return nil
}
