package agent

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ooblab/ooblab/hvagent/agenttest"
	"github.com/ooblab/ooblab/hvagent/alert"
	"github.com/ooblab/ooblab/internal/vmsg"
)

// Whoever holds the host key can make any number of requests with forged
// signatures and envelopes that do not open. They spend the junk budget
// only: a real refusal of a proven principal coming after the flood still
// reaches the SEL, the hook and the answer, and the flood itself is counted
// in summary alerts when its minute ends, never silent.
func TestJunkCannotMaskDenied(t *testing.T) {
	b := newBench(t)
	ctx := context.Background()
	const forged, tampered = 200, 50
	b.vms.Signer = func(string) ed25519.PrivateKey { return agenttest.Key("monitor") }
	for i := range forged {
		// Each claims another principal: every one is a new throttle key.
		msgs := b.do(req(fmt.Sprintf("x%d", i), vmsg.CmdStart, "web1"), ViaOOB)
		if rep, ok := msgs[0].(*vmsg.Reply); !ok || rep.Code != vmsg.ErrDenied {
			t.Fatalf("forged %d: %+v", i, msgs[0])
		}
	}
	b.vms.Signer = agenttest.Key
	for range tampered {
		env := b.seal(req("vms1", vmsg.CmdStart, "web1"))
		env[len(env)-1] ^= 1
		if out, err := b.a.HandleEnvelope(ctx, env, ViaOOB); err == nil || out != nil {
			t.Fatalf("tampered: %v %v", out, err)
		}
	}
	b.settle()
	junk := len(b.sel.Alerts())

	// monitor (read-only, proven by its own key) tries a state change.
	msgs := b.do(req("monitor", vmsg.CmdStart, "web1"), ViaOOB)
	if len(msgs) != 2 {
		t.Fatalf("the denied request's answer holds no alert: %+v", msgs)
	}
	if al, ok := msgs[1].(*vmsg.Alert); !ok || al.Principal != "monitor" {
		t.Fatalf("alert in the answer: %+v", msgs[1])
	}
	b.settle()
	got := b.sel.Alerts()
	if len(got) != junk+1 || got[junk].Principal != "monitor" || Class(got[junk]) != ClassDenied {
		t.Fatalf("the real denied alert did not reach the SEL after the flood (%d junk alerts sent): %+v", junk, got[junk:])
	}
	hook, _ := os.ReadFile(b.hookOut)
	if !strings.Contains(string(hook), `"principal":"monitor"`) {
		t.Fatalf("the real denied alert did not reach the hook")
	}

	// The flood is counted, by kind, when its minute ends.
	if junk != 6 {
		t.Fatalf("%d junk alerts sent one by one, want the junk cap 6", junk)
	}
	if n := b.a.AlertsHeld(alert.Junk); n != forged+tampered-6 {
		t.Fatalf("%d junk alerts held back, want %d", n, forged+tampered-6)
	}
	b.clk.Add(time.Minute)
	b.a.FlushAlerts(ctx)
	b.settle()
	sums := b.sel.Alerts()[junk+1:] // delivered in the background: in either order
	if len(sums) == 2 && Class(sums[0]) == ClassEnvelope {
		sums[0], sums[1] = sums[1], sums[0]
	}
	want := []string{
		fmt.Sprintf("%s: %d refused in the last 1m0s", kindUnproven, forged-6),
		fmt.Sprintf("%s: %d refused in the last 1m0s", kindEnvelope, tampered),
	}
	if len(sums) != 2 || !strings.HasPrefix(sums[0].Reason, want[0]) || !strings.HasPrefix(sums[1].Reason, want[1]) {
		t.Fatalf("summaries %+v, want %q", sums, want)
	}
	if Class(sums[0]) != ClassDenied || Class(sums[1]) != ClassEnvelope || sums[0].Principal != "(several)" {
		t.Fatalf("summaries %+v", sums)
	}
	// Followers see them too.
	n := 0
	for _, al := range b.q2.Alerts() {
		if strings.Contains(al.Reason, "not alerted one by one") {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("%d summaries on Queue 2, want 2", n)
	}
}
