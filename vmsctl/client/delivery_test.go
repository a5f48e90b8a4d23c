package client_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ooblab/ooblab/bmcsim/bmcsimtest"
	"github.com/ooblab/ooblab/internal/inventory"
	"github.com/ooblab/ooblab/internal/pki"
	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

func (ob *oobBench) copies(id uint64) int32 {
	n, ok := ob.seen.Load(id)
	if !ok {
		return 0
	}
	return n.(*atomic.Int32).Load()
}

// An OOB-I answer lost on the way is asked for again before the deadline
// (same request id, new envelope), not only waited for.
func TestOOBAsksAgainForALostAnswer(t *testing.T) {
	ob := newOOBBench(t, bmcsimtest.Options{})
	lose := func(req *vmsg.Request, n int32) bool { return req.Command == vmsg.CmdReboot && n == 1 }
	ob.lose.Store(&lose)
	c, oob := ob.oobClient(t, client.OOBOptions{ReAsk: 200 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := c.Do(ctx, "h1", vmsg.CmdReboot, "web1")
	if err != nil {
		t.Fatal(err)
	}
	if n := ob.copies(res.RequestID); n != 2 {
		t.Fatalf("host got %d copies of the request, want 2 (the first answer lost)", n)
	}
	if st := oob.Stats(); st.ReAsks < 1 {
		t.Fatalf("stats %+v: no re-ask", st)
	}
}

// Delivered (the BMC accepted every record) and never answered is "outcome
// unknown" with the request id, not "unreachable".
func TestOOBDeliveredUnansweredIsOutcomeUnknown(t *testing.T) {
	ob := newOOBBench(t, bmcsimtest.Options{})
	lose := func(*vmsg.Request, int32) bool { return true }
	ob.lose.Store(&lose)
	c, _ := ob.oobClient(t, client.OOBOptions{ReAsk: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	res, err := c.Do(ctx, "h1", vmsg.CmdReboot, "web1")
	t.Log(err)
	if !errors.Is(err, client.ErrOutcomeUnknown) || errors.Is(err, client.ErrUnreachable) {
		t.Fatalf("err %v, want outcome unknown", err)
	}
	var re *client.RequestError
	if !errors.As(err, &re) || re.RequestID != res.RequestID || ob.copies(res.RequestID) == 0 {
		t.Fatalf("err %v: request id %016x not named, or the host never got it", err, res.RequestID)
	}
	if !strings.Contains(err.Error(), client.LookupHint("h1", res.RequestID)) {
		t.Fatalf("err %q lacks how to look it up", err)
	}
}

// A BMC that never opens a session had nothing delivered: unreachable.
func TestOOBNoSessionIsUnreachable(t *testing.T) {
	ob := newOOBBench(t, bmcsimtest.Options{})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0") // answers nothing
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ob.inv.Hosts[0].BMC.Addr = pc.LocalAddr().String()
	c, _ := ob.oobClient(t, client.OOBOptions{UDPTimeout: 50 * time.Millisecond, UDPRetries: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err = c.Do(ctx, "h1", vmsg.CmdReboot, "web1")
	t.Log(err)
	if !errors.Is(err, client.ErrUnreachable) || errors.Is(err, client.ErrOutcomeUnknown) {
		t.Fatalf("err %v, want unreachable", err)
	}
	if !strings.Contains(err.Error(), "h1: request ") {
		t.Fatalf("err %q does not name the request", err)
	}
}

// BenchmarkAutoFailoverUnplugged is issue 21's failover figure: a fresh
// auto client (as one vmsctl run), default budget (300 ms), its VMM-I
// unplugged (the TCP connection opens, TLS never answers: a cut link
// behind a forward), its OOB-I through bmcsim, session set-up included:
// the time from the command's start to the first OOB-I answer (goal
// ≤ 500 ms; it was 672–801 ms when the ping waited for the budget first).
func BenchmarkAutoFailoverUnplugged(b *testing.B) {
	ob := newOOBBench(b, bmcsimtest.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0") // never accepted: the handshake hangs
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	ca, err := pki.NewCA("lab CA", time.Hour, x509.KeyUsageCertSign)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ob.dir, "ca.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}), 0o644); err != nil {
		b.Fatal(err)
	}
	ob.inv.Hosts[0].VMMI = inventory.VMMI{Addr: ln.Addr().String(), CAFile: "ca.pem", ServerName: "hv1.vmmi"}
	var total time.Duration
	for b.Loop() {
		c, err := client.New(ob.inv, client.Options{Auto: client.AutoOptions{NoProbe: true}})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		start := time.Now()
		res, err := c.Do(ctx, "h1", vmsg.CmdStatus, "web1")
		el := time.Since(start)
		cancel()
		c.Close()
		if err != nil || res.Via != client.ViaOOB {
			b.Fatalf("%v %+v", err, res)
		}
		total += el
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/answer")
}
