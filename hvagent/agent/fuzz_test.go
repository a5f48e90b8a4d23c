package agent

import (
	"context"
	"testing"
	"time"

	"github.com/ooblab/ooblab/hvagent/agenttest"
	"github.com/ooblab/ooblab/internal/vmsg"
)

// FuzzHandleEnvelope: bytes from Queue 1 or the VMM-I never panic the agent,
// and anything but an authentic request gets no answer.
func FuzzHandleEnvelope(f *testing.F) {
	b := newBench(f)
	good, _ := b.vms.Seal(&vmsg.Request{ID: 1, Principal: "vms1", Command: vmsg.CmdPing, IssuedMs: b.clk.Now().UnixMilli()})
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte("OB\x01\x01\x03hv1"))
	f.Add(good[:len(good)-1])
	// Sealed by a VMS clock 312 s back: answered ErrClockSkew (clock.go).
	skewed, _ := agenttest.NewVMS(b.key, func() time.Time { return b.clk.Now().Add(-312 * time.Second) }).Seal(
		&vmsg.Request{ID: 2, Principal: "vms1", Command: vmsg.CmdPing, IssuedMs: b.clk.Now().Add(-312 * time.Second).UnixMilli()})
	f.Add(skewed)
	f.Fuzz(func(t *testing.T, env []byte) {
		out, err := b.a.HandleEnvelope(context.Background(), env, ViaOOB)
		if err != nil && out != nil {
			t.Fatalf("answered an envelope it refused: %v", err)
		}
	})
}
