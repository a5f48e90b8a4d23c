package agent

import (
	"context"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ooblab/ooblab/hvagent/journal"
	"github.com/ooblab/ooblab/hvagent/virt"
	"github.com/ooblab/ooblab/hvagent/virt/virttest"
	"github.com/ooblab/ooblab/internal/vmsg"
)

// An action that outlives ActionTimeout (a libvirt call of 61 s, here
// 50 ms against a 50 ms-equivalent timeout) is "still running", then its
// real end: the outcome libvirt finally gives is journalled, never
// "failed on the host" while libvirt finishes it.
func TestLongActionJournalledAsItsEnd(t *testing.T) {
	b := newBenchWith(t, func(c *Config) { c.ActionTimeout, c.DuplicateWait = 50*time.Millisecond, 20*time.Millisecond })
	began, release := b.hv.Hypervisor.(*virttest.Hypervisor).Hold()
	defer release()
	r := req("vms1", vmsg.CmdStart, "web1")
	if rep := b.reply(r); rep.Code != vmsg.ErrInProgress || !strings.Contains(rep.Error, "still running") {
		t.Fatalf("an action past ActionTimeout answered %v %q, want in progress (still running)", rep.Code, rep.Error)
	}
	select {
	case <-began:
	case <-time.After(10 * time.Second):
		t.Fatal("the start never reached the hypervisor")
	}
	if rep := b.reply(r); rep.Code != vmsg.ErrInProgress { // a retry meanwhile
		t.Fatalf("retry while running: %+v", rep)
	}
	h := b.reply(req("monitor", vmsg.CmdHistory, ""))
	if len(h.History) != 1 || h.History[0].RequestID != r.ID || h.History[0].Code != vmsg.ErrInProgress {
		t.Fatalf("history while running = %+v", h.History)
	}
	release() // libvirt ends it, long after the timeout
	b.settle()
	rep := b.reply(r)
	if !rep.OK || len(rep.VMs) != 1 || rep.VMs[0].State != "running" || b.hv.starts.Load() != 1 {
		t.Fatalf("after libvirt finished: %+v, starts %d; want the real end (ok, running), run once", rep, b.hv.starts.Load())
	}
	b.restart()
	if rep := b.reply(r); !rep.OK || b.hv.starts.Load() != 1 {
		t.Fatalf("after a restart: %+v", rep)
	}
}

// Reads claim nothing: 10,001 status requests (the old cap was 10,000
// ids) do not push a state change out, and its retry is answered from the
// journal, not run again.
func TestReadsDoNotEvictStateChanges(t *testing.T) {
	if testing.Short() {
		t.Skip("10,001 sealed requests: a few seconds")
	}
	b := newBench(t)
	start := req("vms1", vmsg.CmdStart, "web1")
	if rep := b.reply(start); !rep.OK {
		t.Fatalf("start: %+v", rep)
	}
	for i := range 10_001 {
		if rep := b.reply(req("monitor", vmsg.CmdStatus, "web1")); !rep.OK {
			t.Fatalf("status %d: %+v", i, rep)
		}
	}
	if _, err := b.hv.Destroy(context.Background(), "web1"); err != nil {
		t.Fatal(err)
	}
	if rep := b.reply(start); !rep.OK || rep.VMs[0].State != "running" || b.hv.starts.Load() != 1 {
		t.Fatalf("retry after 10,001 reads: %+v, starts %d (run again)", rep, b.hv.starts.Load())
	}
	if n := b.j.Len(); n != 1 {
		t.Fatalf("journal holds %d ids, want 1 (reads take none)", n)
	}
}

// failFS is the OS filesystem whose writes fail with ENOSPC (after half
// the bytes) while fail is set: a full disk.
type failFS struct{ fail atomic.Bool }

type failFile struct {
	journal.File
	fs *failFS
}

func (f *failFS) OpenFile(n string, flag int, perm os.FileMode) (journal.File, error) {
	jf, err := journal.OS.OpenFile(n, flag, perm)
	if err != nil {
		return nil, err
	}
	return failFile{jf, f}, nil
}
func (f *failFS) Rename(o, n string) error { return journal.OS.Rename(o, n) }
func (f *failFS) Remove(n string) error    { return journal.OS.Remove(n) }
func (f *failFS) SyncDir(n string) error   { return journal.OS.SyncDir(n) }
func (f failFile) Write(p []byte) (int, error) {
	if f.fs.fail.Load() {
		n, _ := f.File.Write(p[:len(p)/2])
		return n, syscall.ENOSPC
	}
	return f.File.Write(p)
}

// A journal that cannot write stops state changes, loudly (log, alert,
// answer), and still answers reads; an outcome it cannot record is told to
// the requester and alerted, and its retry is answered interrupted, never
// run again.
func TestJournalUnwritable(t *testing.T) {
	fs := &failFS{}
	b := newBench(t)
	b.jopt.FS = fs
	b.restart()
	fs.fail.Store(true)
	rep := b.reply(req("vms1", vmsg.CmdStart, "web1"))
	if rep.Code != vmsg.ErrInternal || !strings.Contains(rep.Error, "not run") || !strings.Contains(rep.Error, "journal") ||
		b.hv.starts.Load() != 0 {
		t.Fatalf("start with a full disk: %+v, starts %d", rep, b.hv.starts.Load())
	}
	b.settle()
	if al := b.sel.Alerts(); len(al) != 1 || Class(al[0]) != ClassJournal || !strings.Contains(al[0].Reason, "no space left") {
		t.Fatalf("alerts = %+v, want one journal alert naming the cause", al)
	}
	if !strings.Contains(b.logs.String(), "state changes are refused") {
		t.Fatal("not logged")
	}
	if rep := b.reply(req("monitor", vmsg.CmdStatus, "web1")); !rep.OK { // reads still answered
		t.Fatalf("status with a full disk: %+v", rep)
	}
	fs.fail.Store(false)
	if rep := b.reply(req("vms1", vmsg.CmdStart, "web1")); !rep.OK {
		t.Fatalf("start once there is room: %+v", rep)
	}

	// The disk fills while an action runs.
	began, release := b.hv.Hypervisor.(*virttest.Hypervisor).Hold()
	r := req("vms1", vmsg.CmdDestroy, "web1")
	got := make(chan *vmsg.Reply, 1)
	go func() { got <- b.reply(r) }()
	<-began
	fs.fail.Store(true)
	release()
	if rep := <-got; !rep.OK || rep.VMs[0].State != "shut off" {
		t.Fatalf("the requester is told what ran: %+v", rep)
	}
	b.settle()
	if al := b.sel.Alerts(); len(al) != 2 || !strings.Contains(al[1].Reason, "outcome not recorded") {
		t.Fatalf("alerts = %+v", al)
	}
	fs.fail.Store(false)
	if _, err := b.hv.Start(context.Background(), "web1"); err != nil {
		t.Fatal(err)
	}
	for range 2 { // in this process and after a restart
		ran := b.a.Executions()
		rep := b.reply(r)
		if rep.Code != vmsg.ErrInterrupted || b.a.Executions() != ran || rep.VMs[0].State != "running" {
			t.Fatalf("retry of an unrecorded outcome: %+v (executions %d, was %d)", rep, b.a.Executions(), ran)
		}
		b.restart()
	}
}

// history shows an interrupted action as "outcome unknown", then, once a
// retry read the VM's state, how it resolved.
func TestHistoryShowsInterrupted(t *testing.T) {
	b := newBench(t)
	r := req("vms1", vmsg.CmdStart, "web1")
	if _, claimed, err := b.j.BeginNote(context.Background(), r.ID, beginNote(r, ViaVMMI)); err != nil || !claimed {
		t.Fatal(err)
	}
	b.restart() // the agent was killed while libvirt started web1
	if _, err := b.hv.Hypervisor.Start(context.Background(), "web1"); err != nil {
		t.Fatal(err) // libvirt finished it
	}
	h := b.reply(req("monitor", vmsg.CmdHistory, ""))
	if len(h.History) != 1 {
		t.Fatalf("history = %+v, want the interrupted start", h.History)
	}
	it := h.History[0]
	if it.RequestID != r.ID || it.Code != vmsg.ErrInterrupted || !strings.Contains(it.Error, "outcome unknown") ||
		it.Executed.Command != vmsg.CmdStart || it.Executed.VM != "web1" || it.Executed.Principal != "vms1" || it.Executed.Via != ViaVMMI {
		t.Fatalf("interrupted item = %+v", it)
	}
	if rep := b.reply(r); rep.Code != vmsg.ErrInterrupted || rep.VMs[0].State != "running" {
		t.Fatalf("retry: %+v", rep)
	}
	b.restart()
	h = b.reply(req("monitor", vmsg.CmdHistory, ""))
	if len(h.History) != 1 || h.History[0].Code != vmsg.ErrInterrupted || h.History[0].State != "running" ||
		h.History[0].Executed.Principal != "vms1" {
		t.Fatalf("resolved item = %+v, want interrupted, then running", h.History)
	}
	if b.hv.starts.Load() != 0 {
		t.Fatal("run again")
	}
}

// A boot-time start is journalled: an agent killed during it leaves a
// claim its successor adopts (InterruptedActions), and history lists it.
func TestBootStartJournalled(t *testing.T) {
	b := newBench(t)
	release := b.hv.hold()
	defer release()
	go b.a.StartAtBoot(context.Background(), "web1")
	b.waitEntered()
	b.j.Close() // SIGKILL while libvirt starts web1
	j, err := journal.Open(b.jpath)
	if err != nil {
		t.Fatal(err)
	}
	in := InterruptedActions(j)
	j.Close()
	if len(in) != 1 || in[0].Action != virt.ActionStart || in[0].VM != "web1" {
		t.Fatalf("InterruptedActions after a kill mid boot-time start = %+v", in)
	}
	release()
	b.settle()

	b2 := newBench(t)
	if st, err := b2.a.StartAtBoot(context.Background(), "web1"); err != nil || st != virt.StateRunning {
		t.Fatalf("StartAtBoot = %v, %v", st, err)
	}
	h := b2.reply(req("monitor", vmsg.CmdHistory, ""))
	if len(h.History) != 1 || !h.History[0].OK || h.History[0].Executed.Via != ViaBoot || h.History[0].Executed.Principal != BootPrincipal {
		t.Fatalf("history = %+v", h.History)
	}
}

// A retried read (its answer lost) is answered as before from memory:
// libvirt is asked once per request id, and the journal holds nothing.
func TestDuplicateReadAnsweredOnce(t *testing.T) {
	b := newBench(t)
	r := req("monitor", vmsg.CmdStatus, "web1")
	if rep := b.reply(r); !rep.OK || rep.VMs[0].State != "shut off" {
		t.Fatalf("status: %+v", rep)
	}
	if _, err := b.hv.Hypervisor.Start(context.Background(), "web1"); err != nil {
		t.Fatal(err)
	}
	if rep := b.reply(r); !rep.OK || rep.VMs[0].State != "shut off" || !strings.Contains(b.logs.String(), "duplicate read") {
		t.Fatalf("retry of a read: %+v, want the first answer", rep)
	}
	other := *r
	other.Command = vmsg.CmdList
	if rep := b.reply(&other); rep.Code != vmsg.ErrBadRequest {
		t.Fatalf("read id reused for another read: %+v", rep)
	}
	if n := b.j.Len(); n != 0 {
		t.Fatalf("journal holds %d ids after reads", n)
	}
}
