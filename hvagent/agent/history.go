package agent

import (
	"sort"
	"time"

	"github.com/ooblab/ooblab/hvagent/journal"

	"github.com/ooblab/ooblab/internal/vmsg"
)

// HistoryMax bounds a history reply: the most recent state changes.
const HistoryMax = 50

// executed is what the agent records (in the journaled reply) about a
// request it ran.
func executed(req *vmsg.Request, via string, now time.Time) *vmsg.Executed {
	return &vmsg.Executed{Principal: req.Principal, Command: req.Command, VM: req.VM, OOBAddr: req.OOBAddr,
		VMMAddr: req.VMMAddr, Metadata: req.Metadata, Via: via, TimeMs: now.UnixMilli()}
}

// history answers a history request from the journal: the state changes
// this agent executed (not list, status or ping: a VMS polling them would
// bury the audit trail), oldest first, at most HistoryMax, each with its
// principal, channel, metadata, VMS addresses and outcome. An action still
// running is listed as in progress; one whose outcome the journal does not
// know (begun before an agent restart) as interrupted, "outcome unknown",
// and, once a retry has read the VM's state, with that state: how it
// resolved.
func (a *Agent) history(req *vmsg.Request, via string, now time.Time) *vmsg.Reply {
	host := a.cfg.Host
	host.TimeMs = now.UnixMilli()
	rep := &vmsg.Reply{RequestID: req.ID, OK: true, Host: &host, Executed: executed(req, via, now)}
	for _, r := range a.cfg.Journal.Results() {
		_, body, ok := splitRecord(r.Data)
		if !ok {
			continue
		}
		old, err := vmsg.DecodeReply(body)
		if err != nil || old.Executed == nil || !old.Executed.Command.ChangesState() {
			continue // unreadable, written before replies carried Executed, or read-only
		}
		it := vmsg.HistoryItem{RequestID: r.ID, Executed: *old.Executed, OK: old.OK, Code: old.Code, Error: old.Error}
		if len(old.VMs) == 1 {
			it.State = old.VMs[0].State
		}
		rep.History = append(rep.History, it)
	}
	for _, p := range []struct {
		rs   []journal.Result
		code vmsg.ErrorCode
		what string
	}{
		{a.cfg.Journal.Interrupted(), vmsg.ErrInterrupted, "outcome unknown: begun before an agent restart (or its outcome could not be recorded); not run again; ask again with its request id for the VM's state"},
		{a.cfg.Journal.Running(), vmsg.ErrInProgress, "still running on the host"},
	} {
		for _, r := range p.rs {
			n, ok := parseNote(r.Data, r.At)
			if !ok {
				continue
			}
			rep.History = append(rep.History, vmsg.HistoryItem{RequestID: r.ID, Code: p.code, Error: p.what,
				Executed: vmsg.Executed{Principal: n.principal, Command: n.cmd, VM: n.vm, Via: n.via, TimeMs: n.at.UnixMilli()}})
		}
	}
	sort.SliceStable(rep.History, func(i, j int) bool { return rep.History[i].Executed.TimeMs < rep.History[j].Executed.TimeMs })
	if n := len(rep.History); n > HistoryMax {
		rep.History = rep.History[n-HistoryMax:]
	}
	return rep
}
