package app

import (
	"context"
	"testing"
	"time"

	"github.com/ooblab/ooblab/internal/qmp/qmptest"
	"github.com/ooblab/ooblab/internal/testutil"
)

// TestStateAnswersInTime: Get Chassis Status asks QEMU through the BMC's
// one QMP connection and answers within stateTimeout (plus slack) whatever
// QEMU does: running, stopped (SIGSTOP: "can't tell", the BMC answers from
// its record) or gone (off). An IPMI client waits 3 × 250 ms.
func TestStateAnswersInTime(t *testing.T) {
	q := qmptest.Start(t)
	p := newHostPower(nil, q.Sock, testutil.Logger(t))

	// QEMU creates the socket a moment after it starts: wait for it.
	testutil.WaitFor(t, 10*time.Second, "QEMU's QMP socket answers 'running'", func() bool {
		on, ok := p.State(context.Background())
		return on && ok
	})

	const bound = stateTimeout + 700*time.Millisecond
	state := func(what string) (on, ok bool) {
		t.Helper()
		start := time.Now()
		on, ok = p.State(context.Background())
		if took := time.Since(start); took > bound {
			t.Fatalf("%s: State took %v, more than %v", what, took, bound)
		}
		return on, ok
	}
	for i := range 20 { // one connection for all of them: no dial each time
		if on, ok := state("running QEMU"); !on || !ok {
			t.Fatalf("running QEMU, query %d: State = on %v ok %v", i, on, ok)
		}
	}
	q.Stop(t)
	if _, ok := state("stopped QEMU"); ok {
		t.Fatal("stopped QEMU: State answered as if it knew; want ok=false (the BMC's record)")
	}
	if _, ok := state("stopped QEMU, reconnecting"); ok {
		t.Fatal("stopped QEMU (reconnect): State answered as if it knew")
	}
	q.Kill()
	if on, ok := state("QEMU gone"); on || !ok {
		t.Fatalf("QEMU gone: State = on %v ok %v, want off", on, ok)
	}
}
