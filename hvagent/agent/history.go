package agent

import (
	"sort"
	"time"

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
// principal, channel, metadata, VMS addresses and outcome.
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
	sort.SliceStable(rep.History, func(i, j int) bool { return rep.History[i].Executed.TimeMs < rep.History[j].Executed.TimeMs })
	if n := len(rep.History); n > HistoryMax {
		rep.History = rep.History[n-HistoryMax:]
	}
	return rep
}
