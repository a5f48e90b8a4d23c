package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ooblab/ooblab/hvagent/journal"
	"github.com/ooblab/ooblab/hvagent/virt"
	"github.com/ooblab/ooblab/internal/vmsg"
)

// execute runs an authorized request. A state change runs detached from
// ctx, with no deadline of the agent's: libvirt's call ends when libvirt
// ends it (a requester that goes away, a connection closed or a SIGTERM
// does not cut it), and the outcome libvirt gives is journalled, however
// late, for the retry. The requester waits at most ActionTimeout; an
// action still running then is answered ErrInProgress ("still running"),
// and a retry waits for (or is told again) the same. A read runs under
// ActionTimeout and is not journalled.
func (a *Agent) execute(ctx context.Context, log *slog.Logger, req *vmsg.Request, fp [fpLen]byte, via string) ([][]byte, error) {
	type result struct {
		env [][]byte
		err error
	}
	state := req.Command.ChangesState()
	done := make(chan result, 1)
	var late atomic.Bool
	start := time.Now()
	if state {
		// The point of no return: from here the action runs to its end
		// and its outcome is journalled, whatever happens to the requester.
		log.Info("action begun")
	}
	a.actions.Add(1)
	go func() {
		defer a.actions.Done()
		rep := a.run(context.WithoutCancel(ctx), log, req)
		a.executions.Add(1)
		if state { // what history lists; list/status replies stay small on the OOB-I
			rep.Executed = executed(req, via, a.cfg.Now())
			a.put(ctx, log, req, fp, rep)
			if late.Load() {
				log.Info("long action ended; its real outcome is journalled for the retry", "ok", rep.OK, "code", rep.Code, "took", time.Since(start))
			}
		} else if _, body, err := vmsg.Encode(rep); err == nil {
			a.reads.put(req.ID, body)
		}
		env, err := a.answer(rep)
		done <- result{env, err}
	}()
	var slow <-chan time.Time
	if state {
		t := time.NewTimer(a.cfg.ActionTimeout)
		defer t.Stop()
		slow = t.C
	}
	select {
	case r := <-done:
		return r.env, r.err
	case <-ctx.Done():
		log.Warn("requester went away while the action runs; it runs to its end and its outcome is journalled for a retry of this request id")
		return nil, ctx.Err()
	case <-slow:
		late.Store(true)
		log.Warn("action still running in libvirt after the action timeout; answered still running; its real outcome is journalled when libvirt gives it", "waited", a.cfg.ActionTimeout)
		return a.answer(&vmsg.Reply{RequestID: req.ID, Code: vmsg.ErrInProgress,
			Error: fmt.Sprintf("still running on the host after %s (libvirt has not finished it); ask again with the same request id for its outcome", a.cfg.ActionTimeout)})
	}
}

// A claim's note says what was begun, so an agent restarted after a crash
// knows what may still be under way (InterruptedActions) and history can
// show it: "start app1", then a line with the principal and one with the
// channel (notes of older agents have the first line only).
func beginNote(req *vmsg.Request, via string) []byte {
	if !req.Command.ChangesState() || req.VM == "" {
		return nil
	}
	return []byte(req.Command.String() + " " + req.VM + "\n" + req.Principal + "\n" + via)
}

// note is a parsed claim note.
type note struct {
	cmd                vmsg.Command
	vm, principal, via string
	at                 time.Time // when it was begun
}

func parseNote(b []byte, at time.Time) (note, bool) {
	lines := strings.Split(string(b), "\n")
	name, vm, ok := strings.Cut(lines[0], " ")
	if !ok || vm == "" {
		return note{}, false
	}
	c, err := vmsg.ParseCommand(name)
	if err != nil || !c.ChangesState() {
		return note{}, false
	}
	n := note{cmd: c, vm: vm, at: at}
	if len(lines) >= 3 {
		n.principal, n.via = lines[1], lines[2]
	}
	return n, true
}

// matches says req is the request the note was written for.
func (n note) matches(req *vmsg.Request) bool {
	return n.cmd == req.Command && n.vm == req.VM && n.principal == req.Principal
}

// noteOf is the note of id, begun and not finished.
func (a *Agent) noteOf(id uint64) (note, bool) {
	for _, r := range a.cfg.Journal.Interrupted() {
		if r.ID == id {
			return parseNote(r.Data, r.At)
		}
	}
	return note{}, false
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
		n, ok := parseNote(r.Data, r.At)
		if !ok {
			continue
		}
		act, err := actionOf(n.cmd)
		if err != nil {
			continue
		}
		out = append(out, Interrupted{RequestID: r.ID, At: r.At, Action: act, VM: n.vm})
	}
	return out
}

// run executes an authorized request on the hypervisor.
// A read runs under ActionTimeout; a state change until libvirt ends it.
func (a *Agent) run(ctx context.Context, log *slog.Logger, req *vmsg.Request) *vmsg.Reply {
	if !req.Command.ChangesState() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.cfg.ActionTimeout)
		defer cancel()
	}
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
