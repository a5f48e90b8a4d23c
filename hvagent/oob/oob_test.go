package oob

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ooblab/ooblab/bmcsim/bmcsimtest"
	"github.com/ooblab/ooblab/bmcsim/config"
	"github.com/ooblab/ooblab/hvagent/agent"
	"github.com/ooblab/ooblab/hvagent/agenttest"
	"github.com/ooblab/ooblab/hvagent/alert"
	"github.com/ooblab/ooblab/hvagent/journal"
	"github.com/ooblab/ooblab/hvagent/sysif"
	"github.com/ooblab/ooblab/hvagent/sysif/chardev"
	"github.com/ooblab/ooblab/hvagent/virt/virttest"
	"github.com/ooblab/ooblab/internal/oem"
	"github.com/ooblab/ooblab/internal/record"
	"github.com/ooblab/ooblab/internal/seal"
	"github.com/ooblab/ooblab/internal/testutil"
	"github.com/ooblab/ooblab/internal/vmsg"
)

// bmcLab is one in-process bmcsim BMC (bmcsimtest: the program's own
// constructor) and the host's chardev client connected to its system
// interface.
type bmcLab struct {
	*bmcsimtest.BMC
	host *chardev.Client
}

func newBMC(t testing.TB, o bmcsimtest.Options) *bmcLab {
	t.Helper()
	o.Logger = testutil.Logger(t)
	o.Users = []config.User{{Name: "vms", Password: "s3cret-vms", Privilege: "operator"}}
	b := bmcsimtest.Start(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	host, err := chardev.Dial(ctx, b.KCSAddr(), chardev.WithLogger(o.Logger))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Close() })
	return &bmcLab{BMC: b, host: host}
}

// lanVMS is the VMS's side of the OOB-I: go-ipmi's RMCP+ client (suite 17)
// against the BMC's LAN channel.
type lanVMS struct {
	t   testing.TB
	c   *client.Client
	ra  *record.Reassembler
	ack *oem.Ack
}

func dialVMS(t testing.TB, port int) *lanVMS {
	t.Helper()
	c, err := client.NewClient("127.0.0.1", port, "vms", "s3cret-vms")
	if err != nil {
		t.Fatal(err)
	}
	c.WithCipherSuiteID(types.CipherSuiteID17).WithTimeout(2 * time.Second).WithRetry(2).WithMaxPrivilegeLevel(types.PrivilegeLevelOperator)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("RMCP+ connect: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return &lanVMS{t: t, c: c, ra: record.NewReassembler(record.ReassemblerConfig{MaxBytes: 16 << 20})}
}

func (v *lanVMS) raw(ctx context.Context, cmd oem.Cmd, data []byte) ([]byte, oem.CompletionCode, error) {
	resp, err := v.c.RawCommand(ctx, types.NetFn(oem.NetFnOEMGroupRequest), uint8(cmd), data, cmd.String())
	if re, ok := types.IsResponseError(err); ok {
		return nil, oem.CompletionCode(re.CompletionCode()), nil
	}
	if err != nil {
		return nil, 0, err
	}
	return resp.Response, oem.CCOK, nil
}

// send writes msg to Queue 1, waiting out 0xC4.
func (v *lanVMS) send(ctx context.Context, msgID uint64, msg []byte) error {
	recs, err := record.Fragment(msgID, msg)
	if err != nil {
		return err
	}
	for _, r := range recs {
		data, _ := (&oem.WriteQueueRequest{IANA: oem.DefaultIANA, Record: r}).Pack()
		for {
			_, cc, err := v.raw(ctx, oem.CmdWriteQueue1, data)
			if err != nil {
				return err
			}
			if cc == oem.CCOK {
				break
			}
			if cc != oem.CCOutOfSpace {
				return fmt.Errorf("write queue 1: %v", cc)
			}
			if err := pause(ctx, 5*time.Millisecond); err != nil {
				return err
			}
		}
	}
	return nil
}

// recv reads Queue 2 until one message is complete.
func (v *lanVMS) recv(ctx context.Context) ([]byte, error) {
	for {
		data, _ := (&oem.ReadQueueRequest{IANA: oem.DefaultIANA, Ack: v.ack}).Pack()
		resp, cc, err := v.raw(ctx, oem.CmdReadQueue2, data)
		if err != nil {
			return nil, err
		}
		if cc != oem.CCOK {
			return nil, fmt.Errorf("read queue 2: %v", cc)
		}
		var r oem.ReadQueueResponse
		if err := r.Unpack(resp); err != nil {
			return nil, err
		}
		if r.Empty {
			v.ack = nil
			if err := pause(ctx, 2*time.Millisecond); err != nil {
				return nil, err
			}
			continue
		}
		v.ack = &oem.Ack{MsgID: r.Record.MsgID, Index: r.Record.Index}
		msg, done, err := v.ra.Add(r.Record, time.Now())
		if err != nil {
			return nil, err
		}
		if done {
			return msg, nil
		}
	}
}

// flush sends the ack of the last record read.
func (v *lanVMS) flush(ctx context.Context) error {
	data, _ := (&oem.ReadQueueRequest{IANA: oem.DefaultIANA, Ack: v.ack}).Pack()
	_, cc, err := v.raw(ctx, oem.CmdReadQueue2, data)
	if err == nil && cc != oem.CCOK {
		err = fmt.Errorf("read queue 2: %v", cc)
	}
	return err
}

// pause waits d or until ctx ends (a poll interval bounded by the test's
// deadline, not a sleep standing in for a signal).
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func runLoop(t testing.TB, cfg Config) *Loop {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testutil.Logger(t)
	}
	l := New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return l
}

// echo answers every envelope with itself.
type echo struct{ n atomic.Int64 }

func (e *echo) HandleEnvelope(_ context.Context, env []byte, _ string) ([][]byte, error) {
	e.n.Add(1)
	return [][]byte{bytes.Clone(env)}, nil
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// TestRoundTripSizes: 1 B to 64 KiB, VMS → Queue 1 → host loop → Queue 2 →
// VMS, byte-exact, over real RMCP+ and the chardev KCS protocol. The poll
// interval is an hour: only attention wakes the loop after its first read.
func TestRoundTripSizes(t *testing.T) {
	lab := newBMC(t, bmcsimtest.Options{Queue1Capacity: 4096, Queue2Capacity: 4096})
	h := &echo{}
	l := runLoop(t, Config{Conn: lab.host, Handler: h, PollInterval: time.Hour})
	vms := dialVMS(t, lab.Port)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	for i, n := range []int{1, 100, record.MaxPayload, record.MaxPayload + 1, 1000, 4096, 16 << 10, 64 << 10} {
		msg := randBytes(n)
		start := time.Now()
		if err := vms.send(ctx, uint64(1000+i), msg); err != nil {
			t.Fatalf("%d B: send: %v", n, err)
		}
		got, err := vms.recv(ctx)
		if err != nil {
			t.Fatalf("%d B: recv: %v (loop stats %+v)", n, err, l.Stats())
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("%d B: answer differs (%d B back)", n, len(got))
		}
		el := time.Since(start)
		recs := (n + record.MaxPayload - 1) / record.MaxPayload
		t.Logf("%6d B, %3d records each way: round trip %v (%.0f µs/record, %.1f KB/s of payload, both ways together)",
			n, recs, el.Round(time.Millisecond), float64(el.Microseconds())/float64(2*recs), float64(2*n)/el.Seconds()/1000)
	}
	if err := vms.flush(ctx); err != nil {
		t.Fatal(err)
	}
	st := l.Stats()
	if st.Messages != 8 || st.Answers != 8 || st.Wakes == 0 || st.RecordsBad != 0 {
		t.Fatalf("stats %+v", st)
	}
	// The last answer's acknowledgement goes out within AckDelay.
	testutil.WaitFor(t, 5*time.Second, "queues drained", func() bool {
		q1, q2 := lab.Queues.Status()
		return q1.Depth == 0 && q2.Depth == 0
	})
}

// TestAckRidesOnNextRead: the acknowledgement of an answered message
// waits for the next read of Queue 1 (the next request's, after its
// attention) instead of a read of its own, and goes out on its own once
// AckDelay is over: back-to-back requests cost the KCS two reads each (the
// record, then "empty"), not three, and no record stays.
func TestAckRidesOnNextRead(t *testing.T) {
	lab := newBMC(t, bmcsimtest.Options{})
	vms := dialVMS(t, lab.Port)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn := &countingConn{Conn: lab.host, wake: make(chan struct{}, 1)}
	g := newGated()
	l := New(Config{Conn: conn, Handler: g, PollInterval: time.Hour, AckDelay: time.Hour, Logger: testutil.Logger(t)})
	lctx, lcancel := context.WithCancel(ctx)
	stopped := make(chan struct{})
	go func() { _ = l.Run(lctx); close(stopped) }()
	testutil.WaitFor(t, 5*time.Second, "the loop's first read", func() bool { return conn.reads.Load() >= 1 })
	base := conn.reads.Load()
	for i := range int64(3) {
		writeInterleaved(t, ctx, vms, 0x42, map[uint64][]byte{uint64(i + 1): []byte("status web1")})
		conn.wake <- struct{}{} // the attention, once
		g.waitEntered(t, 1)
		// The loop read the record, then found Queue 1 empty: it waits.
		testutil.WaitFor(t, 5*time.Second, "two reads per request", func() bool { return conn.reads.Load() >= base+2*(i+1) })
		g.release <- struct{}{}
		for _, m := range readAll(t, ctx, vms, 0x42, 1) {
			if string(m) != "status web1" {
				t.Fatalf("answer %q", m)
			}
		}
	}
	if n := conn.reads.Load() - base; n != 6 {
		t.Errorf("3 requests read Queue 1 %d times, want 6: an acknowledgement took a read of its own", n)
	}
	if n := lab.Queues.Queue1().Len(); n != 1 {
		t.Errorf("queue 1 holds %d records, want the last one, its acknowledgement owed", n)
	}
	lcancel()
	<-stopped
	// With a short AckDelay the last one goes out on its own.
	runLoop(t, Config{Conn: lab.host, Handler: &echo{}, PollInterval: time.Hour, AckDelay: 20 * time.Millisecond})
	testutil.WaitFor(t, 5*time.Second, "queue 1 drained after AckDelay", func() bool { return lab.Queues.Queue1().Len() == 0 })
}

// countingConn counts the windowed reads of Queue 1 through it; its
// attention is the test's (one per request: chardev's own also fires when
// the notification is fetched).
type countingConn struct {
	sysif.Conn
	reads atomic.Int64
	wake  chan struct{}
}

func (c *countingConn) Notify() <-chan struct{} { return c.wake }

func (c *countingConn) Do(ctx context.Context, netfn, cmd uint8, data []byte) ([]byte, uint8, error) {
	if netfn == uint8(oem.NetFnOEMGroupRequest) && cmd == uint8(oem.CmdReadQueue1Win) {
		c.reads.Add(1)
	}
	return c.Conn.Do(ctx, netfn, cmd, data)
}

// TestQueue2Full: the answer does not fit Queue 2; the loop backs off on
// 0xC4 and loses nothing while the VMS drains it slowly.
func TestQueue2Full(t *testing.T) {
	lab := newBMC(t, bmcsimtest.Options{Queue2Capacity: 3})
	l := runLoop(t, Config{Conn: lab.host, Handler: &echo{}, MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	vms := dialVMS(t, lab.Port)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	msgs := [][]byte{randBytes(4000), randBytes(300)}
	for i, m := range msgs {
		if err := vms.send(ctx, uint64(1+i), m); err != nil {
			t.Fatal(err)
		}
	}
	for i, m := range msgs {
		got, err := vms.recv(ctx)
		if err != nil || !bytes.Equal(got, m) {
			t.Fatalf("message %d: %v (%d B)", i, err, len(got))
		}
	}
	if st := l.Stats(); st.FullRetries == 0 {
		t.Fatalf("queue 2 never reported full: %+v", st)
	}
}

// TestQueue2FullNoReader: nobody reads Queue 2. Each answer gets its
// deadline, is dropped and counted, and the loop goes on serving Queue 1;
// an alert sink's send gives up at its own deadline even while an answer
// holds the writer.
func TestQueue2FullNoReader(t *testing.T) {
	lab := newBMC(t, bmcsimtest.Options{Queue2Capacity: 2})
	h := &echo{}
	l := runLoop(t, Config{Conn: lab.host, Handler: h, AnswerTimeout: 100 * time.Millisecond,
		MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond})
	vms := dialVMS(t, lab.Port)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range 3 {
		if err := vms.send(ctx, uint64(1+i), randBytes(2000)); err != nil {
			t.Fatal(err)
		}
	}
	for h.n.Load() < 3 || l.Stats().AnswersDropped < 3 {
		select {
		case <-ctx.Done():
			t.Fatalf("loop stalled behind a full Queue 2: handled %d, %+v", h.n.Load(), l.Stats())
		case <-time.After(10 * time.Millisecond): // polling the loop's counters
		}
	}
	// A sink send while the writer is busy with another message honours its
	// context, whatever the lock.
	hold, release := context.WithCancel(context.Background())
	defer release()
	busy := make(chan error, 1)
	go func() { busy <- l.Send(hold, randBytes(3000)) }()
	sink := &Queue2Sink{Loop: l, Seal: func(alert.Alert) ([]byte, error) { return randBytes(100), nil }}
	sctx, scancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer scancel()
	start := time.Now()
	if err := sink.Send(sctx, alert.Alert{Reason: "test"}); err == nil {
		t.Fatal("alert queued into a full Queue 2")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("sink send took %s past its 50 ms deadline", d)
	}
	release()
	<-busy
}

// TestStrayRecords: records that never make a message are logged and
// skipped; the next message still gets through.
func TestStrayRecords(t *testing.T) {
	lab := newBMC(t, bmcsimtest.Options{})
	h := &echo{}
	l := runLoop(t, Config{Conn: lab.host, Handler: h, PollInterval: 10 * time.Millisecond})
	vms := dialVMS(t, lab.Port)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w := func(r record.Record) {
		data, _ := (&oem.WriteQueueRequest{IANA: oem.DefaultIANA, Record: r}).Pack()
		if _, cc, err := vms.raw(ctx, oem.CmdWriteQueue1, data); err != nil || cc != oem.CCOK {
			t.Fatalf("write: %v %v", cc, err)
		}
	}
	// Fragment 0 of 3, then fragment 1 claiming a count of 2: inconsistent.
	w(record.Record{MsgID: 77, Index: 0, Count: 3, Payload: []byte("aaa")})
	w(record.Record{MsgID: 77, Index: 1, Count: 2, Payload: []byte("bbb")})
	msg := randBytes(500)
	if err := vms.send(ctx, 78, msg); err != nil {
		t.Fatal(err)
	}
	got, err := vms.recv(ctx)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("after stray records: %v", err)
	}
	if st := l.Stats(); st.RecordsBad != 1 || st.Messages != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestAckAfterAnswer: a record is acknowledged only once its message was
// answered, so a host that stops mid-way (a crash) finds it again.
func TestAckAfterAnswer(t *testing.T) {
	lab := newBMC(t, bmcsimtest.Options{})
	vms := dialVMS(t, lab.Port)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := vms.send(ctx, 5, []byte("one record")); err != nil {
		t.Fatal(err)
	}
	// A loop whose handler "crashes": it blocks until its context ends.
	started := make(chan struct{})
	l := New(Config{Conn: lab.host, Logger: testutil.Logger(t), Handler: handlerFunc(func(ctx context.Context, env []byte) ([][]byte, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	})})
	lctx, lcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.Run(lctx) }()
	<-started
	lcancel()
	<-done
	if d := lab.Queues.Queue1().Len(); d != 1 {
		t.Fatalf("queue 1 depth %d after a crash mid-request, want the record kept", d)
	}
	// The restarted loop answers it.
	runLoop(t, Config{Conn: lab.host, Handler: &echo{}})
	got, err := vms.recv(ctx)
	if err != nil || string(got) != "one record" {
		t.Fatalf("after restart: %q %v", got, err)
	}
}

type handlerFunc func(ctx context.Context, env []byte) ([][]byte, error)

func (f handlerFunc) HandleEnvelope(ctx context.Context, env []byte, _ string) ([][]byte, error) {
	return f(ctx, env)
}

// TestAgentOverOOB: sealed requests from the VMS over RMCP+, served by the
// real agent on a fake hypervisor (virttest, test:///default's rules); a refusal raises a SEL entry on the BMC and
// an Alert on Queue 2; a stray reader of Queue 1 sees only ciphertext.
func TestAgentOverOOB(t *testing.T) {
	lab := newBMC(t, bmcsimtest.Options{})
	vms := dialVMS(t, lab.Port)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	key := mustKey(t)
	pol, hv := agenttest.Host(t, virttest.VM{Name: "secret-vm-name"})
	j, err := journal.Open(filepath.Join(t.TempDir(), "j"))
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	var loop *Loop
	var a *agent.Agent
	q2 := &Queue2Sink{Seal: func(al alert.Alert) ([]byte, error) { return a.SealAlert(al) }}
	a, err = agent.New(agent.Config{Key: key, Policy: pol, Hypervisor: hv, Journal: j,
		Alerts: alert.Multi{alert.Log{Logger: testutil.Logger(t)}, &SELSink{Conn: lab.host}}, Queue2: q2, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	v := agenttest.NewVMS(key, nil)
	send := func(r *vmsg.Request) {
		t.Helper()
		r.IssuedMs = time.Now().UnixMilli()
		env, err := v.Seal(r)
		if err != nil {
			t.Fatal(err)
		}
		// Record ids are per message, not per request: a resealed retry
		// is a new message (the BMC drops a record key it just saw).
		if err := vms.send(ctx, binary.BigEndian.Uint64(randBytes(8)), env); err != nil {
			t.Fatal(err)
		}
	}
	recv := func() vmsg.Message {
		t.Helper()
		env, err := vms.recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m, err := v.Open(env)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}

	// Before the host reads it, a stray reader of Queue 1 on the system
	// interface: the record is ciphertext.
	send(&vmsg.Request{ID: 1, Principal: "vms1", Command: vmsg.CmdStart, VM: "secret-vm-name", Metadata: map[string]string{"why": "plaintext-marker"}})
	data, _ := (&oem.ReadQueueRequest{IANA: oem.DefaultIANA}).Pack()
	resp, cc, err := lab.host.Do(ctx, uint8(oem.NetFnOEMGroupRequest), uint8(oem.CmdReadQueue1), data)
	if err != nil || cc != 0 {
		t.Fatalf("stray read: %v %#x", err, cc)
	}
	if len(resp) < 20 || bytes.Contains(resp, []byte("secret-vm")) || bytes.Contains(resp, []byte("plaintext-marker")) || bytes.Contains(resp, []byte("vms1")) {
		t.Fatalf("plaintext visible in Queue 1: %q", resp)
	}

	loop = New(Config{Conn: lab.host, Handler: a, Logger: testutil.Logger(t), PollInterval: 20 * time.Millisecond})
	q2.Loop = loop
	lctx, lcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- loop.Run(lctx) }()
	defer func() { lcancel(); <-done }()

	if r, ok := recv().(*vmsg.Reply); !ok || !r.OK || r.VMs[0].State != "running" {
		t.Fatalf("start: %+v", r)
	}
	send(&vmsg.Request{ID: 2, Principal: "vms1", Command: vmsg.CmdList})
	if r, ok := recv().(*vmsg.Reply); !ok || !r.OK || len(r.VMs) != 2 {
		t.Fatalf("list: %+v", r)
	}
	// Latency of a sealed ping through the whole path: RMCP+ write of
	// queue 1, attention, KCS read, agent (journal fsync), KCS write of
	// queue 2, RMCP+ reads polled every 2 ms.
	var lat []time.Duration
	for i := range 30 {
		t0 := time.Now()
		send(&vmsg.Request{ID: uint64(100 + i), Principal: "vms1", Command: vmsg.CmdPing})
		if r, ok := recv().(*vmsg.Reply); !ok || !r.OK {
			t.Fatalf("ping: %+v", r)
		}
		lat = append(lat, time.Since(t0))
	}
	slices.Sort(lat)
	t.Logf("sealed ping over the OOB-I (in-process BMC, loopback): min %v median %v max %v", lat[0], lat[len(lat)/2], lat[len(lat)-1])
	// Duplicate of request 1 (resealed): answered from the journal.
	send(&vmsg.Request{ID: 1, Principal: "vms1", Command: vmsg.CmdStart, VM: "secret-vm-name", Metadata: map[string]string{"why": "plaintext-marker"}})
	if r, ok := recv().(*vmsg.Reply); !ok || !r.OK {
		t.Fatalf("duplicate: %+v", r)
	}
	// Denied: reply, then an Alert message on Queue 2, and a SEL entry.
	send(&vmsg.Request{ID: 3, Principal: "intruder", Command: vmsg.CmdDestroy, VM: "secret-vm-name"})
	if r, ok := recv().(*vmsg.Reply); !ok || r.Code != vmsg.ErrDenied {
		t.Fatalf("denied: %+v", r)
	}
	if al, ok := recv().(*vmsg.Alert); !ok || al.Principal != "intruder" || al.Action != "destroy" {
		t.Fatalf("alert: %+v", al)
	}
	// The alert reaches its outlets in the background, each on its own:
	// the one on Queue 2 having arrived says nothing of the SEL's.
	testutil.WaitFor(t, 10*time.Second, "the denied request's SEL entry", func() bool { return len(lab.BMC.BMC.SEL.Entries()) > 0 })
	sel := lab.BMC.BMC.SEL.Entries()
	if len(sel) != 1 {
		t.Fatalf("SEL has %d entries", len(sel))
	}
	e := sel[0]
	if e[2] != 0xC0 || !bytes.Equal(e[7:10], []byte{0xD9, 0x7E, 0x00}) || e[10] != agent.ClassDenied || e[11] != byte(vmsg.CmdDestroy) || binary.LittleEndian.Uint32(e[12:]) != 3 {
		t.Fatalf("SEL entry % x", e)
	}
	// A tampered envelope: no answer, an Alert on Queue 2 through the sink.
	env, _ := v.Seal(&vmsg.Request{ID: 4, Principal: "vms1", Command: vmsg.CmdPing, IssuedMs: time.Now().UnixMilli()})
	env[len(env)-3] ^= 0x40
	if err := vms.send(ctx, 4, env); err != nil {
		t.Fatal(err)
	}
	if al, ok := recv().(*vmsg.Alert); !ok || agent.Class(alert.Alert{Reason: al.Reason}) != agent.ClassEnvelope {
		t.Fatalf("tamper alert: %+v", al)
	}
	// The SEL and Queue 2 sinks run concurrently: the SEL entry may land
	// just after the Alert message.
	for len(lab.BMC.BMC.SEL.Entries()) != 2 {
		if err := pause(ctx, time.Millisecond); err != nil {
			t.Fatalf("SEL has %d entries after the tampered envelope", len(lab.BMC.BMC.SEL.Entries()))
		}
	}
	if e := lab.BMC.BMC.SEL.Entries()[1]; e[10] != agent.ClassEnvelope {
		t.Fatalf("SEL entry % x", e)
	}
}

func mustKey(t testing.TB) *seal.Key {
	t.Helper()
	k, err := seal.Enroll("h1")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// The agent's class numbers are the SEL record's (oem.AlertClass), which
// vmsctl host sel names.
func TestAgentClassesAreOEMAlertClasses(t *testing.T) {
	for reason, want := range map[string]oem.AlertClass{
		agent.ReasonDenied: oem.AlertDenied, agent.ReasonChallenge: oem.AlertChallenge, agent.ReasonEnvelope: oem.AlertEnvelope,
		agent.ReasonReplay: oem.AlertReplay, agent.ReasonLocal: oem.AlertLocal, agent.ReasonGuest: oem.AlertGuest,
		agent.ReasonCrash: oem.AlertCrash, "something else": oem.AlertOther,
	} {
		rec := SELRecord(alert.Alert{Reason: reason + ": x", Action: "destroy", RequestID: 7}, oem.DefaultIANA, time.Unix(1, 0))
		a, ok := oem.ParseSELAlert(rec[:], oem.DefaultIANA)
		if !ok || a.Class != want || a.Class.String() != want.String() || a.Command != byte(vmsg.CmdDestroy) || a.RequestID != 7 {
			t.Errorf("%q: %+v %v, want class %v", reason, a, ok, want)
		}
		if !strings.HasPrefix(reason, want.String()) && want != oem.AlertOther {
			t.Errorf("class %v is named %q, the reason prefix is %q", want, want.String(), reason)
		}
	}
}

// TestAnswerAddressedToRequester: a request whose records carry requester
// id X is answered with records addressed to X; another reader (the
// version 1 read, or another id) does not see them, X does.
func TestAnswerAddressedToRequester(t *testing.T) {
	lab := newBMC(t, bmcsimtest.Options{})
	runLoop(t, Config{Conn: lab.host, Handler: &echo{}, PollInterval: 10 * time.Millisecond})
	vms := dialVMS(t, lab.Port)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const x = 0x5eed
	msg := randBytes(500) // three records
	recs, err := record.FragmentFor(x, 42, msg)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		data, _ := (&oem.WriteQueueRequest{IANA: oem.DefaultIANA, Record: r}).Pack()
		if _, cc, err := vms.raw(ctx, oem.CmdWriteQueue1, data); err != nil || cc != oem.CCOK {
			t.Fatalf("write: %v %v", cc, err)
		}
	}
	readFor := func(reader uint32, ack *oem.Ack) oem.ReadQueueResponse {
		t.Helper()
		data, _ := (&oem.ReadQueue2ForRequest{IANA: oem.DefaultIANA, Reader: reader, Flags: oem.ReadAlertLog, Ack: ack}).Pack()
		resp, cc, err := vms.raw(ctx, oem.CmdReadQueue2For, data)
		if err != nil || cc != oem.CCOK {
			t.Fatalf("read-for %#x: %v %v", reader, cc, err)
		}
		var r oem.ReadQueueResponse
		if err := r.Unpack(resp); err != nil {
			t.Fatal(err)
		}
		return r
	}
	// Wait for the whole answer to be queued.
	for lab.Queues.Queue2().Len() < len(recs) {
		if err := pause(ctx, 2*time.Millisecond); err != nil {
			t.Fatalf("answer never queued: %v", err)
		}
	}
	if r := readFor(x+1, nil); !r.Empty {
		t.Fatalf("another reader got %v", r.Record)
	}
	data, _ := (&oem.ReadQueueRequest{IANA: oem.DefaultIANA}).Pack()
	resp, _, _ := vms.raw(ctx, oem.CmdReadQueue2, data)
	if !bytes.Equal(resp, []byte{0xd9, 0x7e, 0x00, 0x01}) {
		t.Fatalf("version 1 reader got % x", resp)
	}
	ra := record.NewReassembler(record.ReassemblerConfig{})
	var ack *oem.Ack
	for {
		r := readFor(x, ack)
		if r.Empty {
			t.Fatal("answer incomplete")
		}
		if r.Record.Requester != x {
			t.Fatalf("record addressed to %#x", r.Record.Requester)
		}
		ack = &oem.Ack{MsgID: r.Record.MsgID, Index: r.Record.Index}
		got, done, err := ra.Add(r.Record, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if done {
			if !bytes.Equal(got, msg) {
				t.Fatal("answer differs")
			}
			break
		}
	}
	readFor(x, ack)
	if n := lab.Queues.Queue2().Len(); n != 0 {
		t.Fatalf("queue 2 holds %d records after the ack", n)
	}
}

// TestAlertInAnswerGoesToEveryReader: an answer made of a Reply and an
// Alert (a refusal over the OOB-I) sends the Reply to the requester and the
// Alert to the alert log.
func TestAlertInAnswerGoesToEveryReader(t *testing.T) {
	lab := newBMC(t, bmcsimtest.Options{})
	key, err := seal.Enroll("hv1")
	if err != nil {
		t.Fatal(err)
	}
	sl := seal.NewSealer(key)
	h := handlerFunc(func(_ context.Context, env []byte) ([][]byte, error) {
		rep, _ := sl.Seal(vmsg.KindReply, 1001, []byte{0xa0}, time.Now())
		al, _ := sl.Seal(vmsg.KindAlert, 1002, []byte{0xa0}, time.Now())
		return [][]byte{rep, al}, nil
	})
	runLoop(t, Config{Conn: lab.host, Handler: h, PollInterval: 10 * time.Millisecond})
	q1, q2 := lab.Queues.Queue1(), lab.Queues.Queue2()
	if err := q1.Write(record.Record{Requester: 0x77, MsgID: 5, Count: 1, Payload: []byte("req")}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for q2.Len() < 2 {
		if err := pause(ctx, 2*time.Millisecond); err != nil {
			t.Fatalf("answers never queued: %v", err)
		}
	}
	if r, ok, _ := q2.ReadFor(0x77, false, nil); !ok || r.MsgID != 1001 || r.Requester != 0x77 {
		t.Fatalf("requester read %v %v", r, ok)
	}
	if r, ok, _ := q2.ReadFor(0x99, true, nil); !ok || r.MsgID != 1002 || r.Requester != 0 {
		t.Fatalf("follower read %v %v", r, ok)
	}
}

// notReady is a system interface whose BMC is away (QEMU answers 0xD2 while
// bmcsim restarts) for the first writes to Queue 2, then back.
type notReady struct {
	away   atomic.Int32
	writes atomic.Int32
}

func (c *notReady) Do(ctx context.Context, netfn, cmd uint8, data []byte) ([]byte, uint8, error) {
	if cmd != uint8(oem.CmdWriteQueue2) {
		return nil, uint8(oem.CCInvalidCommand), nil
	}
	c.writes.Add(1)
	if c.away.Add(-1) >= 0 {
		return nil, uint8(oem.CCNotReady), nil
	}
	resp, _ := (&oem.WriteQueueResponse{IANA: oem.DefaultIANA}).Pack()
	return resp, 0, nil
}
func (c *notReady) Notify() <-chan struct{} { return nil }
func (c *notReady) Close() error            { return nil }

// An answer written while the BMC restarts (0xD2 from QEMU) is held and
// written once it is back, not dropped; a refusal (0xCC) is not retried.
func TestQueue2WriteWaitsOutBMCRestart(t *testing.T) {
	c := &notReady{}
	c.away.Store(4)
	l := New(Config{Conn: c, Handler: &echo{}, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Send(ctx, randBytes(100)); err != nil {
		t.Fatalf("answer dropped while the BMC restarted: %v", err)
	}
	if n := c.writes.Load(); n != 5 {
		t.Fatalf("%d writes, want 4 refused and 1 taken", n)
	}
	// A record the BMC refuses outright is not retried.
	c.away.Store(0)
	c.writes.Store(0)
	bad := &refusing{}
	l2 := New(Config{Conn: bad, Handler: &echo{}, MinBackoff: time.Millisecond})
	if err := l2.Send(ctx, randBytes(100)); err == nil || bad.writes.Load() != 1 {
		t.Fatalf("refused record: err %v after %d writes", err, bad.writes.Load())
	}
	for _, cc := range []oem.CompletionCode{oem.CCNodeBusy, oem.CCTimeout, oem.CCNotReady} {
		if !cc.Transient() {
			t.Errorf("%v not transient", cc)
		}
	}
	if oem.CCInvalidDataField.Transient() || oem.CCOutOfSpace.Transient() {
		t.Error("a refusal counted as transient")
	}
}

type refusing struct{ writes atomic.Int32 }

func (c *refusing) Do(context.Context, uint8, uint8, []byte) ([]byte, uint8, error) {
	c.writes.Add(1)
	return nil, uint8(oem.CCInvalidDataField), nil
}
func (c *refusing) Notify() <-chan struct{} { return nil }
func (c *refusing) Close() error            { return nil }
