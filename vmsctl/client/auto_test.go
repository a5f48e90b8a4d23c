package client_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ooblab/ooblab/internal/inventory"
	"github.com/ooblab/ooblab/internal/testutil"
	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
	"github.com/ooblab/ooblab/vmsctl/client/clienttest"
)

func fakeInv() *inventory.Inventory {
	return &inventory.Inventory{Principal: "ops", Hosts: []inventory.Host{{Name: "h1", HostID: "hv1"}, {Name: "h2", HostID: "hv2"}}}
}

// requests drops the liveness pings the auto channel adds.
func requests(calls []clienttest.Call) []clienttest.Call {
	var out []clienttest.Call
	for _, c := range calls {
		if c.Req.Command != vmsg.CmdPing {
			out = append(out, c)
		}
	}
	return out
}

func TestAutoFallsBackAndReturns(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	vmmi := &clienttest.Fake{ChannelName: client.ViaVMMI, Handle: func(ctx context.Context, host string, req *vmsg.Request) (vmsg.Message, error) {
		if down.Load() {
			return clienttest.Timeout(ctx, host, req)
		}
		return &vmsg.Reply{RequestID: req.ID, OK: true}, nil
	}}
	oob := &clienttest.Fake{ChannelName: client.ViaOOB}
	c, err := client.New(fakeInv(), client.Options{VMMI: vmmi, OOB: oob,
		Auto: client.AutoOptions{Budget: 40 * time.Millisecond, Backoff: 150 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	// 1. VMM-I times out within the budget; OOB-I carries the same request id.
	start := time.Now()
	res, err := c.Do(ctx, "h1", vmsg.CmdStart, "web1")
	if err != nil {
		t.Fatal(err)
	}
	if res.Via != client.ViaOOB {
		t.Fatalf("via %s, want oob-i", res.Via)
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("fallback took %v", el)
	}
	vc, oc := requests(vmmi.Calls()), oob.Calls()
	if len(vc) != 1 || len(oc) != 1 || vc[0].Req.ID != oc[0].Req.ID || vc[0].Req.ID != res.RequestID {
		t.Fatalf("want one call each with the same request id; vmmi %+v oob %+v", vc, oc)
	}
	if h := c.Health("h1"); h.Healthy || h.Failures != 1 {
		t.Fatalf("health after failure: %+v", h)
	}

	// 2. Within the backoff, requests skip VMM-I (a probe may run beside).
	res, err = c.Do(ctx, "h1", vmsg.CmdStatus, "web1")
	if err != nil || res.Via != client.ViaOOB {
		t.Fatalf("during backoff: %v via %v", err, res)
	}
	if vr := requests(vmmi.Calls()); len(vr) != 1 {
		t.Fatalf("VMM-I got %d requests; during backoff only probes expected", len(vr))
	}
	// Another host is not affected.
	if res, err := c.Do(ctx, "h2", vmsg.CmdList, ""); err != nil || res.Via != client.ViaOOB {
		// h2's VMM-I is down too (same fake); it fails over independently.
		t.Fatalf("h2: %v %+v", err, res)
	}

	// 3. VMM-I heals: a probe or the end of the backoff brings it back.
	down.Store(false)
	testutil.WaitFor(t, 10*time.Second, "VMM-I to be used again", func() bool {
		res, err := c.Do(ctx, "h1", vmsg.CmdStatus, "web1")
		return err == nil && res.Via == client.ViaVMMI
	})
	if h := c.Health("h1"); !h.Healthy {
		t.Fatalf("health after recovery: %+v", h)
	}
}

func TestAutoProbeRestoresBeforeBackoffEnds(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	vmmi := &clienttest.Fake{Handle: func(ctx context.Context, host string, req *vmsg.Request) (vmsg.Message, error) {
		if down.Load() {
			return nil, errors.New("connection refused")
		}
		return &vmsg.Reply{RequestID: req.ID, OK: true}, nil
	}}
	oob := &clienttest.Fake{ChannelName: client.ViaOOB}
	c, _ := client.New(fakeInv(), client.Options{VMMI: vmmi, OOB: oob,
		Auto: client.AutoOptions{Budget: 50 * time.Millisecond, Backoff: time.Hour}})
	defer c.Close()
	ctx := context.Background()
	if res, err := c.Do(ctx, "h1", vmsg.CmdList, ""); err != nil || res.Via != client.ViaOOB {
		t.Fatalf("%v %+v", err, res)
	}
	down.Store(false)
	// The backoff is an hour: only the probe can restore VMM-I.
	if res, err := c.Do(ctx, "h1", vmsg.CmdList, ""); err != nil || res.Via != client.ViaOOB {
		t.Fatalf("%v %+v", err, res)
	}
	testutil.WaitFor(t, 10*time.Second, "probe to mark VMM-I healthy", func() bool { return c.Health("h1").Healthy })
	if res, err := c.Do(ctx, "h1", vmsg.CmdList, ""); err != nil || res.Via != client.ViaVMMI {
		t.Fatalf("%v %+v", err, res)
	}
}

func TestUnreachableOnEveryChannel(t *testing.T) {
	vmmi := &clienttest.Fake{Handle: clienttest.Unreachable}
	oob := &clienttest.Fake{ChannelName: client.ViaOOB, Handle: clienttest.Unreachable}
	c, _ := client.New(fakeInv(), client.Options{VMMI: vmmi, OOB: oob, Auto: client.AutoOptions{Budget: 20 * time.Millisecond}})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := c.Do(ctx, "h1", vmsg.CmdList, "")
	if !errors.Is(err, client.ErrUnreachable) {
		t.Fatalf("err %v, want ErrUnreachable", err)
	}
	// The single-channel modes say the same.
	c2, _ := client.New(fakeInv(), client.Options{Via: "oob", VMMI: vmmi, OOB: oob})
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel2()
	if _, err := c2.Do(ctx2, "h1", vmsg.CmdList, ""); !errors.Is(err, client.ErrUnreachable) {
		t.Fatalf("oob only: %v", err)
	}
}

func TestChallengeResendsSameRequestID(t *testing.T) {
	nonce := []byte("0123456789abcdef")
	vmmi := &clienttest.Fake{Handle: func(ctx context.Context, host string, req *vmsg.Request) (vmsg.Message, error) {
		if req.Answer == nil {
			return &vmsg.Challenge{RequestID: req.ID, Nonce: nonce, VM: req.VM, Command: req.Command,
				ExpiresMs: time.Now().Add(time.Minute).UnixMilli()}, nil
		}
		if string(req.Answer.Nonce) != string(nonce) || req.Answer.Code != "123456" {
			return &vmsg.Reply{RequestID: req.ID, Code: vmsg.ErrChallengeNo, Error: "wrong code"}, nil
		}
		return &vmsg.Reply{RequestID: req.ID, OK: true}, nil
	}}
	var asked int
	c, _ := client.New(fakeInv(), client.Options{Via: "vmmi", VMMI: vmmi, OOB: &clienttest.Fake{},
		Challenge: func(ctx context.Context, host string, ch *vmsg.Challenge) (string, error) {
			asked++
			if ch.VM != "db1" || ch.Command != vmsg.CmdDestroy {
				t.Errorf("challenge for %v %v", ch.Command, ch.VM)
			}
			return "123456", nil
		}})
	res, err := c.Do(context.Background(), "h1", vmsg.CmdDestroy, "db1")
	if err != nil || !res.Challenged || asked != 1 {
		t.Fatalf("%v %+v asked %d", err, res, asked)
	}
	calls := vmmi.Calls()
	if len(calls) != 2 || calls[0].Req.ID != calls[1].Req.ID || calls[1].Req.Answer == nil {
		t.Fatalf("calls %+v", calls)
	}

	// A wrong code is ErrChallengeFailed and a ReplyError with ErrChallengeNo.
	c2, _ := client.New(fakeInv(), client.Options{Via: "vmmi", VMMI: vmmi, OOB: &clienttest.Fake{},
		Challenge: func(context.Context, string, *vmsg.Challenge) (string, error) { return "000000", nil }})
	_, err = c2.Do(context.Background(), "h1", vmsg.CmdDestroy, "db1")
	var re *client.ReplyError
	if !errors.Is(err, client.ErrChallengeFailed) || !errors.As(err, &re) || re.Code != vmsg.ErrChallengeNo {
		t.Fatalf("wrong code: %v", err)
	}
	// No challenge source at all.
	c3, _ := client.New(fakeInv(), client.Options{Via: "vmmi", VMMI: vmmi, OOB: &clienttest.Fake{}})
	if _, err := c3.Do(context.Background(), "h1", vmsg.CmdDestroy, "db1"); !errors.Is(err, client.ErrChallengeFailed) {
		t.Fatalf("no source: %v", err)
	}
}

// TestAutoSlowActionSentOnce: an action that takes far longer than the
// budget, on a VMM-I that answers pings at once, is sent once, over VMM-I,
// and waited for.
func TestAutoSlowActionSentOnce(t *testing.T) {
	vmmi := &clienttest.Fake{Handle: func(ctx context.Context, host string, req *vmsg.Request) (vmsg.Message, error) {
		if req.Command == vmsg.CmdStart {
			tm := time.NewTimer(time.Second) // libvirt starting a domain
			defer tm.Stop()
			select {
			case <-tm.C:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return &vmsg.Reply{RequestID: req.ID, OK: true}, nil
	}}
	oob := &clienttest.Fake{ChannelName: client.ViaOOB}
	c, _ := client.New(fakeInv(), client.Options{VMMI: vmmi, OOB: oob,
		Auto: client.AutoOptions{Budget: 30 * time.Millisecond, Liveness: 100 * time.Millisecond, NoProbe: true}})
	defer c.Close()
	res, err := c.Do(context.Background(), "h1", vmsg.CmdStart, "db1")
	if err != nil {
		t.Fatal(err)
	}
	if res.Via != client.ViaVMMI || res.ExecutedVia != client.ViaVMMI || len(res.SentVia) != 0 {
		t.Fatalf("result %+v", res)
	}
	if n := len(oob.Calls()); n != 0 {
		t.Fatalf("the slow action also went over the OOB-I (%d calls)", n)
	}
	reqs := requests(vmmi.Calls())
	if len(reqs) != 1 {
		t.Fatalf("VMM-I got the action %d times", len(reqs))
	}
	if pings := len(vmmi.Calls()) - len(reqs); pings < 2 {
		t.Fatalf("reachability checked %d times during a 1 s action", pings)
	}
	if h := c.Health("h1"); !h.Healthy {
		t.Fatalf("health %+v", h)
	}
}

// TestAutoAcceptedThenLinkDies: VMM-I took the request, then stops reaching
// the agent (pings go unanswered) before the answer: the same request id is
// fetched over the OOB-I, and the result says both channels had it.
func TestAutoAcceptedThenLinkDies(t *testing.T) {
	var cut atomic.Bool
	vmmi := &clienttest.Fake{Handle: func(ctx context.Context, host string, req *vmsg.Request) (vmsg.Message, error) {
		if req.Command == vmsg.CmdStart {
			cut.Store(true) // the link goes while the action runs
		}
		if cut.Load() {
			return clienttest.Timeout(ctx, host, req)
		}
		return &vmsg.Reply{RequestID: req.ID, OK: true}, nil
	}}
	oob := &clienttest.Fake{ChannelName: client.ViaOOB}
	c, _ := client.New(fakeInv(), client.Options{VMMI: vmmi, OOB: oob,
		Auto: client.AutoOptions{Budget: 30 * time.Millisecond, NoProbe: true}})
	defer c.Close()
	res, err := c.Do(context.Background(), "h1", vmsg.CmdStart, "db1")
	if err != nil {
		t.Fatal(err)
	}
	if res.Via != client.ViaOOB || res.ExecutedVia != "" || len(res.SentVia) != 2 {
		t.Fatalf("result %+v", res)
	}
	oc, vc := oob.Calls(), requests(vmmi.Calls())
	if len(oc) != 1 || len(vc) != 1 || oc[0].Req.ID != vc[0].Req.ID {
		t.Fatalf("want the same request id once per channel; vmmi %+v oob %+v", vc, oc)
	}

	// A VMM-I that cannot connect never had the request: the OOB-I ran it.
	down := &clienttest.Fake{Handle: func(context.Context, string, *vmsg.Request) (vmsg.Message, error) {
		return nil, fmt.Errorf("%w: dial: connection refused", client.ErrNotDelivered)
	}}
	c2, _ := client.New(fakeInv(), client.Options{VMMI: down, OOB: oob, Auto: client.AutoOptions{NoProbe: true}})
	defer c2.Close()
	res, err = c2.Do(context.Background(), "h1", vmsg.CmdShutdown, "db1")
	if err != nil || res.Via != client.ViaOOB || res.ExecutedVia != client.ViaOOB {
		t.Fatalf("%v %+v", err, res)
	}
}

// A VMM-I whose dial or TLS handshake hangs (a cut link behind a port
// forward that accepts) never sent the request: once given up, the answer
// says the OOB-I alone carried and ran it, not "sent over both".
func TestAutoHangingDialNotSent(t *testing.T) {
	vmmi := &clienttest.Fake{Handle: func(ctx context.Context, _ string, _ *vmsg.Request) (vmsg.Message, error) {
		<-ctx.Done()
		return nil, fmt.Errorf("%w: vmm-i TLS handshake: %w", client.ErrNotDelivered, ctx.Err())
	}}
	oob := &clienttest.Fake{ChannelName: client.ViaOOB}
	c, _ := client.New(fakeInv(), client.Options{VMMI: vmmi, OOB: oob,
		Auto: client.AutoOptions{Budget: 30 * time.Millisecond, NoProbe: true}})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.Do(ctx, "h1", vmsg.CmdList, "")
	if err != nil {
		t.Fatal(err)
	}
	if res.Via != client.ViaOOB || res.ExecutedVia != client.ViaOOB || len(res.SentVia) != 1 || res.SentVia[0] != client.ViaOOB {
		t.Fatalf("want delivered, sent and run via oob-i only; got %+v", res)
	}
}

// A reply "in progress" (another copy of the request id still runs on the
// host) is asked again with the same id until the outcome comes.
func TestInProgressAskedAgainSameID(t *testing.T) {
	var n atomic.Int32
	vmmi := &clienttest.Fake{Handle: func(ctx context.Context, host string, req *vmsg.Request) (vmsg.Message, error) {
		if n.Add(1) < 3 {
			return &vmsg.Reply{RequestID: req.ID, Code: vmsg.ErrInProgress, Error: "still running"}, nil
		}
		return &vmsg.Reply{RequestID: req.ID, OK: true}, nil
	}}
	c, _ := client.New(fakeInv(), client.Options{Via: "vmmi", VMMI: vmmi, OOB: &clienttest.Fake{}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.Do(ctx, "h1", vmsg.CmdStart, "web1")
	if err != nil || !res.Reply.OK {
		t.Fatalf("%v %+v", err, res)
	}
	calls := vmmi.Calls()
	if len(calls) != 3 || calls[0].Req.ID != calls[2].Req.ID {
		t.Fatalf("calls %+v", calls)
	}
}

// TestAutoPingBesideRequest: the liveness ping goes out beside the request,
// not after a budget of waiting for its answer: with a budget of an hour
// and a VMM-I that carried the request but cannot reach the agent (the
// ping fails at once), the OOB-I is asked (same request id) long before
// the budget would have ended. On the old order (request, budget, then
// ping) this waits the hour.
func TestAutoPingBesideRequest(t *testing.T) {
	pinged := make(chan struct{})
	vmmi := &clienttest.Fake{Handle: func(ctx context.Context, host string, req *vmsg.Request) (vmsg.Message, error) {
		if req.Command == vmsg.CmdPing {
			close(pinged)
			return nil, errors.New("vmm-i h1: connection reset by peer")
		}
		return clienttest.Lost(ctx, host, req) // written on the connection, no answer
	}}
	oob := &clienttest.Fake{ChannelName: client.ViaOOB, Handle: func(ctx context.Context, host string, req *vmsg.Request) (vmsg.Message, error) {
		select {
		case <-pinged: // the ping came before the OOB-I was asked
		default:
			t.Error("OOB-I asked before the VMM-I ping")
		}
		return &vmsg.Reply{RequestID: req.ID, OK: true}, nil
	}}
	c, _ := client.New(fakeInv(), client.Options{VMMI: vmmi, OOB: oob,
		Auto: client.AutoOptions{Budget: time.Hour, NoProbe: true}})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.Do(ctx, "h1", vmsg.CmdReboot, "web1")
	if err != nil {
		t.Fatal(err)
	}
	oc, vc := oob.Calls(), requests(vmmi.Calls())
	if res.Via != client.ViaOOB || len(res.SentVia) != 2 || res.ExecutedVia != "" ||
		len(oc) != 1 || len(vc) != 1 || oc[0].Req.ID != vc[0].Req.ID {
		t.Fatalf("want the same request id once per channel, sent over both; result %+v vmmi %+v oob %+v", res, vc, oc)
	}
}

// A request the VMM-I carried and nobody answered is not "unreachable",
// even when the OOB-I cannot be reached: the host has it (exit 7, look it
// up), and the OOB-I was asked with the same id, not a new request.
func TestAutoCarriedIsNeverUnreachable(t *testing.T) {
	vmmi := &clienttest.Fake{Handle: func(ctx context.Context, host string, req *vmsg.Request) (vmsg.Message, error) {
		if req.Command == vmsg.CmdPing {
			return clienttest.Unreachable(ctx, host, req)
		}
		return clienttest.Lost(ctx, host, req)
	}}
	oob := &clienttest.Fake{ChannelName: client.ViaOOB, Handle: clienttest.Unreachable}
	c, _ := client.New(fakeInv(), client.Options{VMMI: vmmi, OOB: oob,
		Auto: client.AutoOptions{Budget: 20 * time.Millisecond, NoProbe: true}})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	res, err := c.Do(ctx, "h1", vmsg.CmdReboot, "web1")
	if !errors.Is(err, client.ErrOutcomeUnknown) || errors.Is(err, client.ErrUnreachable) {
		t.Fatalf("err %v, want outcome unknown", err)
	}
	oc, vc := oob.Calls(), requests(vmmi.Calls())
	if len(oc) != 1 || len(vc) != 1 || oc[0].Req.ID != res.RequestID || vc[0].Req.ID != res.RequestID {
		t.Fatalf("want request %016x once per channel; vmmi %+v oob %+v", res.RequestID, vc, oc)
	}
	// Both channels unreachable: that is exit 5.
	vmmi.Handle = clienttest.Unreachable
	c2, _ := client.New(fakeInv(), client.Options{VMMI: vmmi, OOB: oob, Auto: client.AutoOptions{Budget: 20 * time.Millisecond, NoProbe: true}})
	defer c2.Close()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	if _, err := c2.Do(ctx2, "h1", vmsg.CmdReboot, "web1"); !errors.Is(err, client.ErrUnreachable) || errors.Is(err, client.ErrOutcomeUnknown) {
		t.Fatalf("nothing delivered: %v", err)
	}
}

// Still running at the deadline is "outcome unknown", saying so.
func TestInProgressAtDeadlineIsUnknown(t *testing.T) {
	vmmi := &clienttest.Fake{Handle: func(ctx context.Context, host string, req *vmsg.Request) (vmsg.Message, error) {
		return &vmsg.Reply{RequestID: req.ID, Code: vmsg.ErrInProgress, Error: "still running"}, nil
	}}
	c, _ := client.New(fakeInv(), client.Options{Via: "vmmi", VMMI: vmmi, OOB: &clienttest.Fake{}})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	res, err := c.Do(ctx, "h1", vmsg.CmdReboot, "web1")
	var ue *client.OutcomeUnknownError
	if !errors.As(err, &ue) || !ue.InProgress || !strings.Contains(err.Error(), fmt.Sprintf("request %016x", res.RequestID)) {
		t.Fatalf("err %v", err)
	}
}
