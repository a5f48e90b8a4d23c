package lvirt

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"libvirt.org/go/libvirt"

	"github.com/ooblab/ooblab/hvagent/virt"
	"github.com/ooblab/ooblab/hvagent/virt/virttest"
)

const testDomXML = `<domain type='test'>
  <name>%s</name>
  <memory unit='KiB'>65536</memory>
  <vcpu>2</vcpu>
  <os><type>hvm</type></os>
</domain>`

// newTest opens test:///default and defines a shut-off domain "vm1".
// Connections open at the same time share the driver's state, and since
// the agent runs libvirt's event loop a closed connection may be released
// a moment later on the loop's thread; so newTest removes a "vm1" left by
// the test before, and removes its own when the test ends.
func newTest(t *testing.T) *Libvirt {
	t.Helper()
	l, err := Open(context.Background(), "test:///default")
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	removeVM := func() {
		if d, err := l.Conn().LookupDomainByName("vm1"); err == nil {
			d.Destroy()
			d.Undefine()
			d.Free()
		}
	}
	removeVM()
	t.Cleanup(func() {
		removeVM()
		l.Close()
	})
	d, err := l.Conn().DomainDefineXML(fmt.Sprintf(testDomXML, "vm1"))
	if err != nil {
		t.Fatalf("define vm1: %v", err)
	}
	d.Free()
	return l
}

// TestActionsTable runs the action scripts the fake hypervisor
// (virttest) is checked with against test:///default, so both agree.
func TestActionsTable(t *testing.T) {
	virttest.RunScripts(t, func(t *testing.T) (virt.Hypervisor, string) { return newTest(t), "vm1" })
}

func TestStateErrorNamesActionAndState(t *testing.T) {
	l := newTest(t)
	_, err := l.Suspend(context.Background(), "vm1")
	var se *virt.StateError
	if !errors.As(err, &se) {
		t.Fatalf("err = %v, want *StateError", err)
	}
	if se.Action != virt.ActionSuspend || se.State != virt.StateShutOff || se.VM != "vm1" {
		t.Fatalf("StateError = %+v", se)
	}
	if want := `virt: cannot suspend VM "vm1" while shut off`; se.Error() != want {
		t.Fatalf("Error() = %q, want %q", se.Error(), want)
	}
}

func TestUnknownVM(t *testing.T) {
	l := newTest(t)
	ctx := context.Background()
	if _, err := l.Status(ctx, "nope"); !errors.Is(err, virt.ErrNoSuchVM) {
		t.Errorf("Status: err = %v, want ErrNoSuchVM", err)
	}
	for _, a := range []virt.Action{virt.ActionStart, virt.ActionShutdown, virt.ActionDestroy, virt.ActionReboot, virt.ActionSuspend, virt.ActionResume} {
		if _, err := virt.Do(ctx, l, a, "nope"); !errors.Is(err, virt.ErrNoSuchVM) {
			t.Errorf("%s: err = %v, want ErrNoSuchVM", a, err)
		}
	}
	if _, err := virt.Do(ctx, l, "explode", "vm1"); !errors.Is(err, virt.ErrUnknownAction) {
		t.Errorf("Do(explode): err = %v, want ErrUnknownAction", err)
	}
}

func TestListAndStatus(t *testing.T) {
	l := newTest(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l.now = func() time.Time { return now }
	ctx := context.Background()
	doms, err := l.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]virt.State{}
	for _, d := range doms {
		got[d.Name] = d.State
	}
	// "test" is the test driver's own running domain.
	if got["test"] != virt.StateRunning || got["vm1"] != virt.StateShutOff || len(got) != 2 {
		t.Fatalf("List = %v", doms)
	}

	st, err := l.Status(ctx, "vm1")
	if err != nil {
		t.Fatal(err)
	}
	if st.VCPUs != 2 || st.MaxMemKiB != 65536 || st.Uptime != 0 {
		t.Fatalf("Status(shut off) = %+v", st)
	}
	if _, err := l.Start(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	now = now.Add(90 * time.Second)
	st, err = l.Status(ctx, "vm1")
	if err != nil {
		t.Fatal(err)
	}
	if st.Uptime != 90*time.Second || st.UptimeSource != virt.UptimeAgentStart || st.MemoryKiB == 0 {
		t.Fatalf("Status(running) = %+v, want uptime 90s from the agent's start", st)
	}
	// "test" was running before the agent saw it: uptime is a lower bound.
	st, err = l.Status(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	if st.UptimeSource != virt.UptimeAgentObserved || st.Uptime != 90*time.Second {
		t.Fatalf("Status(test) = %+v, want uptime observed since List", st)
	}
}

func TestContextHonoured(t *testing.T) {
	l := newTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Start(ctx, "vm1"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Start(cancelled): err = %v", err)
	}
	st, _ := l.Status(context.Background(), "vm1")
	if st.State != virt.StateShutOff {
		t.Fatalf("a cancelled Start ran: state %q", st.State)
	}
	if _, err := Open(ctx, "test:///default"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Open(cancelled): err = %v", err)
	}
}

func TestWaitState(t *testing.T) {
	l := newTest(t)
	ctx := context.Background()
	if _, err := l.Start(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Shutdown(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if s, err := virt.WaitState(wctx, l, "vm1", virt.StateShutOff, 10*time.Millisecond); err != nil || s != virt.StateShutOff {
		t.Fatalf("WaitState = %q, %v", s, err)
	}
	// Waiting for a state that never comes ends with the deadline.
	wctx2, cancel2 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel2()
	if _, err := virt.WaitState(wctx2, l, "vm1", virt.StateRunning, 10*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitState(never) err = %v", err)
	}
}

// Many goroutines toggling one VM through one connection: every call must
// succeed or be refused with ErrInvalidState, never anything else (run
// with -race).
func TestConcurrentActions(t *testing.T) {
	l := newTest(t)
	ctx := context.Background()
	if _, err := l.Start(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	acts := []virt.Action{virt.ActionSuspend, virt.ActionResume, virt.ActionStart, virt.ActionReboot}
	var wg sync.WaitGroup
	errc := make(chan error, 64)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				a := acts[(g+i)%len(acts)]
				if _, err := virt.Do(ctx, l, a, "vm1"); err != nil && !errors.Is(err, virt.ErrInvalidState) {
					errc <- fmt.Errorf("%s: %w", a, err)
					return
				}
				if _, err := l.List(ctx); err != nil {
					errc <- err
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}

// TestFigures checks the figures List and Status report, from libvirt.
func TestFigures(t *testing.T) {
	l := newTest(t)
	ctx := context.Background()
	d, err := l.Conn().LookupDomainByName("vm1")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Free()
	if err := d.SetAutostart(true); err != nil {
		t.Fatalf("SetAutostart: %v", err)
	}
	if _, err := l.Start(ctx, "vm1"); err != nil {
		t.Fatalf("Start: %v", err)
	}
	st, err := l.Status(ctx, "vm1")
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	doms, err := l.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	var listed *virt.Domain
	for i := range doms {
		if doms[i].Name == "vm1" {
			listed = &doms[i]
		}
	}
	if listed == nil {
		t.Fatalf("List has no vm1: %+v", doms)
	}
	for name, got := range map[string]virt.Status{"Status": st, "List": *listed} {
		if got.State != virt.StateRunning || got.Reason != "booted" || got.VCPUs != 2 || got.MemoryKiB != 65536 ||
			!got.Autostart || !got.Persistent || got.UptimeSource != virt.UptimeAgentStart {
			t.Errorf("%s = %+v, want running (booted), 2 vCPUs, 65536 KiB, autostart, persistent, uptime from agent-start", name, got)
		}
	}
	if _, err := l.Destroy(ctx, "vm1"); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	st, err = l.Status(ctx, "vm1")
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if st.State != virt.StateShutOff || st.Reason != "destroyed" || st.Uptime != 0 {
		t.Errorf("after destroy: %+v, want shut off (destroyed), no uptime", st)
	}
}

func TestReasonText(t *testing.T) {
	for _, tt := range []struct {
		s    libvirt.DomainState
		r    int
		want string
	}{
		{libvirt.DOMAIN_RUNNING, int(libvirt.DOMAIN_RUNNING_BOOTED), "booted"},
		{libvirt.DOMAIN_SHUTOFF, int(libvirt.DOMAIN_SHUTOFF_DESTROYED), "destroyed"},
		{libvirt.DOMAIN_PAUSED, int(libvirt.DOMAIN_PAUSED_USER), "user"},
		{libvirt.DOMAIN_CRASHED, int(libvirt.DOMAIN_CRASHED_PANICKED), "panicked"},
		{libvirt.DOMAIN_SHUTOFF, 0, ""},
		{libvirt.DOMAIN_SHUTOFF, 99, "reason 99"},
		{libvirt.DomainState(42), 3, ""},
	} {
		if got := reasonText(tt.s, tt.r); got != tt.want {
			t.Errorf("reasonText(%d, %d) = %q, want %q", tt.s, tt.r, got, tt.want)
		}
	}
}

func TestInflightOwnEvents(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var f inflight
	m := f.begin("vm1", virt.ActionStart)
	if a, ok := f.own("vm1", virt.EventStarted, t0); !ok || a != virt.ActionStart {
		t.Fatalf("Started during start: %v %v", a, ok)
	}
	f.end(m, t0)
	if _, ok := f.own("vm1", virt.EventStopped, t0.Add(time.Second)); ok {
		t.Fatal("a Stopped right after a start counted as the start's")
	}
	if _, ok := f.own("vm2", virt.EventStarted, t0); ok {
		t.Fatal("another VM's event counted")
	}
	if _, ok := f.own("vm1", virt.EventResumed, t0.Add(virt.OwnGrace-time.Millisecond)); !ok {
		t.Fatal("Resumed within the grace not counted")
	}
	if _, ok := f.own("vm1", virt.EventStarted, t0.Add(virt.OwnGrace+time.Millisecond)); ok {
		t.Fatal("Started after the grace counted")
	}
	// A shutdown waits for its Stopped; once seen, a second Stopped is not its.
	m = f.begin("vm1", virt.ActionShutdown)
	f.end(m, t0)
	at := t0.Add(time.Minute)
	if a, ok := f.own("vm1", virt.EventStopped, at); !ok || a != virt.ActionShutdown {
		t.Fatalf("Stopped a minute after a shutdown: %v %v", a, ok)
	}
	if _, ok := f.own("vm1", virt.EventStopped, at.Add(virt.OwnGrace+time.Millisecond)); ok {
		t.Fatal("a later Stopped counted as the shutdown's")
	}
	// A start a killed agent began, adopted by its successor: libvirt
	// finishing it is the agent's doing, until the window closes.
	f.adopt("vm3", virt.ActionStart, t0.Add(time.Minute))
	for _, e := range []virt.EventType{virt.EventResumed, virt.EventStarted} {
		if a, ok := f.own("vm3", e, t0.Add(20*time.Second)); !ok || a != virt.ActionStart {
			t.Fatalf("%s of an adopted start: %v %v", e, a, ok)
		}
	}
	if _, ok := f.own("vm3", virt.EventStopped, t0.Add(20*time.Second)); ok {
		t.Fatal("a Stopped counted as an adopted start's")
	}
	if _, ok := f.own("vm3", virt.EventStarted, t0.Add(time.Minute+time.Millisecond)); ok {
		t.Fatal("Started after the adopted window counted")
	}
	// The agent acts on the VM itself (a destroy over the OOB-I): the old
	// start is over. A `virsh start` after it, still inside the adopted
	// window, is somebody else's (fresh-clone CI: a reset's interrupted
	// start hid a local start's alert for two minutes).
	f.adopt("vm4", virt.ActionStart, t0.Add(time.Minute))
	m = f.begin("vm4", virt.ActionDestroy)
	f.end(m, t0.Add(10*time.Second))
	if _, ok := f.own("vm4", virt.EventStarted, t0.Add(30*time.Second)); ok {
		t.Fatal("a Started after the agent's own destroy counted as the adopted start's")
	}
}

// A call abandoned by its context keeps running in the background; Close
// waits for it instead of closing the connection under it (the race
// detector saw Close free the connection while an abandoned Status, from
// WaitState's deadline, still used it).
func TestCloseWaitsForAbandonedCalls(t *testing.T) {
	l, err := Open(context.Background(), "test:///default")
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var finished atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	entered := make(chan struct{})
	go func() {
		<-entered
		cancel()
	}()
	_, err = call(ctx, l, func() (string, error) {
		close(entered)
		<-release
		uri, err := l.conn.GetURI() // uses the connection after the caller left
		finished.Store(true)
		return uri, err
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("call = %v, want context.Canceled", err)
	}
	closed := make(chan error, 1)
	go func() { closed <- l.Close() }()
	close(release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if !finished.Load() {
		t.Fatal("Close returned before the abandoned call finished")
	}
	if _, err := call(context.Background(), l, func() (int, error) { return 0, nil }); err == nil {
		t.Fatal("a call after Close ran")
	}
}
