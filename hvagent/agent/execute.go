package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/ooblab/ooblab/hvagent/journal"
	"github.com/ooblab/ooblab/hvagent/virt"
	"github.com/ooblab/ooblab/internal/vmsg"
)

// execute runs a claimed request. The action runs to its end under its own
// deadline (ActionTimeout), detached from ctx: a requester that goes away
// (connection closed, loop cancelled, SIGTERM) does not cut it, and its real
// outcome is journalled for the retry.
func (a *Agent) execute(ctx context.Context, log *slog.Logger, req *vmsg.Request, fp [fpLen]byte, via string) ([][]byte, error) {
	type result struct {
		env [][]byte
		err error
	}
	done := make(chan result, 1)
	if req.Command.ChangesState() {
		// The point of no return: from here the action runs to its end
		// and its outcome is journalled, whatever happens to the requester.
		log.Info("action begun")
	}
	a.actions.Add(1)
	go func() {
		defer a.actions.Done()
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.ActionTimeout)
		defer cancel()
		rep := a.run(actx, log, req)
		a.executions.Add(1)
		if req.Command.ChangesState() { // what history lists; list/status replies stay small on the OOB-I
			rep.Executed = executed(req, via, a.cfg.Now())
		}
		kind, body, err := vmsg.Encode(rep)
		if err != nil {
			a.abort(log, req.ID)
			done <- result{err: err}
			return
		}
		if err := a.cfg.Journal.Put(req.ID, joinRecord(fp, body)); err != nil {
			// The action ran; the VMS gets its answer, but a retry could run
			// it again. Tell the operator.
			log.Error("journal put failed after the action ran; a retry of this request id may run it again", "err", err)
			a.abort(log, req.ID)
		}
		env, err := a.sealer.Seal(kind, randID(), body, a.cfg.Now())
		if err != nil {
			done <- result{err: err}
			return
		}
		done <- result{env: [][]byte{env}}
	}()
	select {
	case r := <-done:
		return r.env, r.err
	case <-ctx.Done():
		log.Warn("requester went away while the action runs; it runs to its end and its outcome is journalled for a retry of this request id")
		return nil, ctx.Err()
	}
}

// beginNote is what a claim records about a state change ("start app1"),
// so an agent restarted after a crash knows what may still be under way
// (InterruptedActions).
func beginNote(req *vmsg.Request) []byte {
	if !req.Command.ChangesState() || req.VM == "" {
		return nil
	}
	return []byte(req.Command.String() + " " + req.VM)
}

// Interrupted is a state change a previous agent process began and never
// finished (it crashed or was killed): libvirt may still be carrying it out.
type Interrupted struct {
	RequestID uint64
	At        time.Time // when it was begun
	Action    virt.Action
	VM        string
}

// InterruptedActions lists the state changes j holds as begun before a
// crash, from the notes their claims recorded.
func InterruptedActions(j *journal.Journal) []Interrupted {
	var out []Interrupted
	for _, r := range j.Interrupted() {
		name, vm, ok := strings.Cut(string(r.Data), " ")
		if !ok || vm == "" {
			continue
		}
		c, err := vmsg.ParseCommand(name)
		if err != nil {
			continue
		}
		act, err := actionOf(c)
		if err != nil {
			continue
		}
		out = append(out, Interrupted{RequestID: r.ID, At: r.At, Action: act, VM: vm})
	}
	return out
}

// run executes an authorized request on the hypervisor.
func (a *Agent) run(ctx context.Context, log *slog.Logger, req *vmsg.Request) *vmsg.Reply {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.ActionTimeout)
	defer cancel()
	host := a.cfg.Host
	host.TimeMs = a.cfg.Now().UnixMilli()
	rep := &vmsg.Reply{RequestID: req.ID, Host: &host}
	h := a.cfg.Hypervisor
	start := time.Now()
	var err error
	switch req.Command {
	case vmsg.CmdPing:
	case vmsg.CmdList:
		var doms []virt.Domain
		doms, err = h.List(ctx)
		for _, d := range doms {
			rep.VMs = append(rep.VMs, vmState(d))
		}
	case vmsg.CmdStatus:
		var st virt.Status
		st, err = h.Status(ctx, req.VM)
		if err == nil {
			rep.VMs = []vmsg.VMState{vmState(st)}
		}
	default:
		var act virt.Action
		act, err = actionOf(req.Command)
		if err == nil {
			var state virt.State
			state, err = virt.Do(ctx, h, act, req.VM)
			if err == nil {
				vs := vmsg.VMState{Name: req.VM, State: string(state)}
				if st, serr := h.Status(ctx, req.VM); serr == nil {
					vs = vmState(st)
					vs.State = string(state) // the state the action left, as reported by it
				}
				rep.VMs = []vmsg.VMState{vs}
			}
		}
	}
	if err != nil {
		rep.Code, rep.Error = errorCode(err), err.Error()
		log.Warn("request failed on the hypervisor", "err", err, "took", time.Since(start))
		return rep
	}
	rep.OK = true
	log.Info("request done", "vms", len(rep.VMs), "took", time.Since(start))
	return rep
}

func vmState(st virt.Status) vmsg.VMState {
	return vmsg.VMState{Name: st.Name, State: string(st.State), VCPUs: uint32(st.VCPUs),
		MemoryKiB: st.MemoryKiB, UptimeSec: uint64(st.Uptime / time.Second),
		Reason: st.Reason, CPUTimeMs: uint64(st.CPUTime / time.Millisecond), Autostart: st.Autostart,
		Persistent: st.Persistent, MaxMemKiB: st.MaxMemKiB, UptimeSource: string(st.UptimeSource)}
}

func actionOf(c vmsg.Command) (virt.Action, error) {
	switch c {
	case vmsg.CmdStart:
		return virt.ActionStart, nil
	case vmsg.CmdShutdown:
		return virt.ActionShutdown, nil
	case vmsg.CmdDestroy:
		return virt.ActionDestroy, nil
	case vmsg.CmdReboot:
		return virt.ActionReboot, nil
	case vmsg.CmdSuspend:
		return virt.ActionSuspend, nil
	case vmsg.CmdResume:
		return virt.ActionResume, nil
	}
	return "", fmt.Errorf("%w: %v", virt.ErrUnknownAction, c)
}

func errorCode(err error) vmsg.ErrorCode {
	switch {
	case errors.Is(err, virt.ErrNoSuchVM):
		return vmsg.ErrNoSuchVM
	case errors.Is(err, virt.ErrUnknownAction):
		return vmsg.ErrBadRequest
	default:
		return vmsg.ErrHypervisor
	}
}
