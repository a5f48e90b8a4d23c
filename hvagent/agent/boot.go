package agent

import (
	"context"
	"fmt"

	"github.com/ooblab/ooblab/hvagent/virt"
	"github.com/ooblab/ooblab/internal/vmsg"
)

// BootPrincipal and ViaBoot name the agent's own boot-time starts in the
// journal and in history.
const (
	BootPrincipal = "hvagent"
	ViaBoot       = "boot"
)

// StartAtBoot starts vm as the agent's own action (--start-vm), journalled
// like a request: claimed with a note before libvirt is asked, its outcome
// recorded after. An agent killed during it leaves the claim, so its
// successor knows the start may still be under way (InterruptedActions:
// its VM events are the agent's own, not an unauthorized local change),
// and history lists it. It runs to its end whatever happens to ctx (as an
// action does), and a stop waits for it (Wait).
func (a *Agent) StartAtBoot(ctx context.Context, vm string) (virt.State, error) {
	req := &vmsg.Request{ID: randID(), Principal: BootPrincipal, Command: vmsg.CmdStart, VM: vm}
	log := a.log.With("via", ViaBoot, "request_id", req.ID, "command", "start", "vm", vm)
	_, claimed, err := a.cfg.Journal.BeginNote(ctx, req.ID, beginNote(req, ViaBoot))
	if err != nil || !claimed {
		log.Error("boot-time start not run: the journal cannot record it", "err", err)
		return "", fmt.Errorf("boot-time start of %s: journal: %w", vm, err)
	}
	a.actions.Add(1)
	defer a.actions.Done()
	log.Info("action begun")
	rep := a.run(context.WithoutCancel(ctx), log, req)
	a.executions.Add(1)
	rep.Executed = executed(req, ViaBoot, a.cfg.Now())
	a.put(ctx, log, req, fingerprint(req), rep)
	if !rep.OK {
		return "", fmt.Errorf("boot-time start of %s: %s", vm, rep.Error)
	}
	return virt.State(rep.VMs[0].State), nil
}
