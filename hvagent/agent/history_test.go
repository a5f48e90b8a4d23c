package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/ooblab/ooblab/internal/vmsg"
)

// Metadata and the VMS's addresses travel with a request, are logged,
// come back in the reply, are journaled with it and are listed by history
// (state changes only, across an agent restart, over either channel).
func TestMetadataAndHistory(t *testing.T) {
	b := newBench(t)
	start := req("vms1", vmsg.CmdStart, "web1")
	start.Metadata = map[string]string{"ticket": "OPS-42", "reason": "maintenance over"}
	start.OOBAddr, start.VMMAddr = "127.0.0.1:6230", "127.0.0.1:7443"
	r := b.reply(start)
	if !r.OK || r.Executed == nil || r.Executed.Metadata["ticket"] != "OPS-42" || r.Executed.OOBAddr != "127.0.0.1:6230" ||
		r.Executed.VMMAddr != "127.0.0.1:7443" || r.Executed.Via != ViaOOB || r.Executed.Principal != "vms1" {
		t.Fatalf("reply does not return what ran: %+v / %+v", r, r.Executed)
	}
	if logs := b.logs.String(); !strings.Contains(logs, "OPS-42") || !strings.Contains(logs, "vms_oob_i=127.0.0.1:6230") {
		t.Fatalf("metadata not logged:\n%s", logs)
	}
	b.clk.Add(time.Second)
	b.reply(req("vms1", vmsg.CmdStatus, "web1")) // read-only: not in history
	destroy := req("vms1", vmsg.CmdDestroy, "web1")
	destroy.Metadata = map[string]string{"ticket": "OPS-43"}
	if msgs := b.do(destroy, ViaVMMI); len(msgs) != 1 || !msgs[0].(*vmsg.Reply).OK {
		t.Fatalf("destroy: %+v", msgs)
	}
	b.clk.Add(time.Second)
	if r := b.reply(req("vms1", vmsg.CmdSuspend, "web1")); r.OK { // refused by libvirt (shut off): listed with its error
		t.Fatalf("suspend of a shut-off VM: %+v", r)
	}
	b.restart()

	h := b.reply(req("monitor", vmsg.CmdHistory, "")) // read-only default: any known principal
	if !h.OK || len(h.History) != 3 {
		t.Fatalf("history = %+v, want start, destroy, suspend", h)
	}
	want := []struct {
		cmd    vmsg.Command
		via    string
		ticket string
		ok     bool
		state  string
	}{
		{vmsg.CmdStart, ViaOOB, "OPS-42", true, "running"},
		{vmsg.CmdDestroy, ViaVMMI, "OPS-43", true, "shut off"},
		{vmsg.CmdSuspend, ViaOOB, "", false, ""},
	}
	for i, w := range want {
		it := h.History[i]
		if it.Executed.Command != w.cmd || it.Executed.Via != w.via || it.Executed.Metadata["ticket"] != w.ticket ||
			it.OK != w.ok || it.State != w.state || it.Executed.VM != "web1" || it.Executed.Principal != "vms1" || it.Executed.TimeMs == 0 {
			t.Errorf("history[%d] = %+v, want %+v", i, it, w)
		}
	}
	if h.History[0].RequestID != start.ID || h.History[0].Executed.OOBAddr != "127.0.0.1:6230" {
		t.Errorf("history[0] = %+v", h.History[0])
	}
	if h.History[2].Code != vmsg.ErrHypervisor || h.History[2].Error == "" {
		t.Errorf("a failed action keeps its error: %+v", h.History[2])
	}
	// history itself is not journaled: asking twice gives the same list.
	if h2 := b.reply(req("monitor", vmsg.CmdHistory, "")); len(h2.History) != 3 {
		t.Fatalf("second history: %d items", len(h2.History))
	}
	// An unknown principal gets nothing.
	if r := b.do(req("stranger", vmsg.CmdHistory, ""), ViaOOB); r[0].(*vmsg.Reply).Code != vmsg.ErrDenied {
		t.Fatalf("stranger: %+v", r[0])
	}
}
