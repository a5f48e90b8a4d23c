package client_test

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/handlers"

	"github.com/ooblab/ooblab/bmcsim/bmcsimtest"
	"github.com/ooblab/ooblab/bmcsim/config"
	"github.com/ooblab/ooblab/bmcsim/queue"
	"github.com/ooblab/ooblab/internal/inventory"
	"github.com/ooblab/ooblab/internal/oem"
	"github.com/ooblab/ooblab/internal/record"
	"github.com/ooblab/ooblab/internal/seal"
	"github.com/ooblab/ooblab/internal/testutil"
	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

// lossyProxy forwards UDP between one client and the BMC and drops the
// packets drop says to drop (n counts packets in that direction from 1).
type lossyProxy struct {
	conn *net.UDPConn
	bmc  *net.UDPAddr
	drop func(toBMC bool, n int64) bool
	// forge, when set, gives datagrams to send the client (from the BMC's
	// address, as far as it can tell) before each real answer.
	forge   func(answer []byte) [][]byte
	on      atomic.Bool
	dropped atomic.Int64
	up, dn  atomic.Int64
}

func startProxy(t *testing.T, bmcAddr *net.UDPAddr, drop func(bool, int64) bool) *lossyProxy {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	p := &lossyProxy{conn: conn, bmc: bmcAddr, drop: drop}
	up, err := net.DialUDP("udp", nil, bmcAddr)
	if err != nil {
		t.Fatal(err)
	}
	var client atomic.Pointer[net.UDPAddr]
	var wg sync.WaitGroup
	wg.Go(func() { // client → BMC
		buf := make([]byte, 2048)
		for {
			n, from, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			client.Store(from)
			k := p.up.Add(1)
			if p.on.Load() && p.drop(true, k) {
				p.dropped.Add(1)
				continue
			}
			up.Write(buf[:n])
		}
	})
	wg.Go(func() { // BMC → client
		buf := make([]byte, 2048)
		for {
			n, err := up.Read(buf)
			if err != nil {
				return
			}
			k := p.dn.Add(1)
			if p.on.Load() && p.drop(false, k) {
				p.dropped.Add(1)
				continue
			}
			if to := client.Load(); to != nil {
				if p.on.Load() && p.forge != nil {
					for _, f := range p.forge(buf[:n]) {
						conn.WriteToUDP(f, to)
					}
				}
				conn.WriteToUDP(buf[:n], to)
			}
		}
	})
	t.Cleanup(func() { conn.Close(); up.Close(); wg.Wait() })
	return p
}

func (p *lossyProxy) addr() string { return p.conn.LocalAddr().String() }

// oobBench is a bmcsim BMC with the OOB-I queues, a host that answers from
// the system-interface side, and an inventory pointing at it.
type oobBench struct {
	bs    *bmcsimtest.BMC
	inv   *inventory.Inventory
	qs    *queue.Queues
	key   *seal.Key
	bmc   *net.UDPAddr
	dir   string
	seen  sync.Map // request id → count of requests received by the host
	alert atomic.Bool
	// lose, when set, says which answers the host loses on the way (the
	// nth copy of a request id it received, from 1): as when queue 2 was
	// full or the reader was evicted.
	lose atomic.Pointer[func(req *vmsg.Request, n int32) bool]
	// work is how long the host takes to serve a status (a hypervisor's
	// libvirt calls; 0: at once).
	work atomic.Int64
}

var sysCh = &bmc.Channel{Number: 0x0f, Medium: bmc.ChannelMediumSystemIF}

func newOOBBench(t testing.TB, qo bmcsimtest.Options) *oobBench {
	t.Helper()
	bs := bmcsimtest.Start(t, bmcsimtest.Options{NoKCS: true, Redfish: true,
		Users:          []config.User{{Name: "op", Password: "op-secret-1", Privilege: "operator"}},
		Queue1Capacity: qo.Queue1Capacity, Queue2Capacity: qo.Queue2Capacity, Config: qo.Config, BeforeServe: qo.BeforeServe})
	qs := bs.Queues
	ctx, cancel := context.WithCancel(context.Background())

	key, err := seal.Enroll("hv1")
	if err != nil {
		t.Fatal(err)
	}
	ob := &oobBench{qs: qs, key: key, bmc: bs.UDPAddr(), dir: t.TempDir(), bs: bs}
	hostDone := make(chan struct{})
	go func() { defer close(hostDone); ob.host(ctx, t) }()
	t.Cleanup(func() {
		cancel()
		<-hostDone
	})
	write := func(name, s string) string {
		p := filepath.Join(ob.dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return name
	}
	ob.inv = &inventory.Inventory{Principal: "ops", Dir: ob.dir, Hosts: []inventory.Host{{
		Name: "h1", HostID: "hv1", SecretFile: write("h1.key", key.URI()+"\n"),
		BMC: inventory.BMC{Addr: ob.bmc.String(), User: "op", PasswordFile: write("h1.pw", "op-secret-1\n"), CipherSuite: 17, IANA: config.DefaultIANA,
			Redfish: bs.RedfishURL, RedfishCAFile: write("redfish-ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: bs.RedfishCert.Raw})))},
	}}}
	return ob
}

// host plays hvagent on the system interface: it drains queue 1 through the
// OEM 0x02 handler, opens each request and writes a sealed reply addressed
// to the request's requester id (preceded by an alert to every reader when
// ob.alert is set) through the OEM 0x03 handler.
func (ob *oobBench) host(ctx context.Context, t testing.TB) {
	iana := oem.IANA(config.DefaultIANA)
	rd := ob.qs.Handler(oem.CmdReadQueue1, iana)
	wr := ob.qs.Handler(oem.CmdWriteQueue2, iana)
	hctx := &handlers.HandlerContext{Channel: sysCh}
	ra := record.NewReassembler(record.ReassemblerConfig{})
	op := seal.NewOpener(ob.key, seal.OpenerOptions{})
	sl := seal.NewSealer(ob.key)
	var ack *oem.Ack
	send := func(to uint32, m vmsg.Message) {
		kind, body, err := vmsg.Encode(m)
		if err != nil {
			t.Error(err)
			return
		}
		id := client.NewID()
		env, _ := sl.Seal(kind, id, body, time.Now())
		recs, _ := record.FragmentFor(to, id, env)
		for _, r := range recs {
			data, _ := (&oem.WriteQueueRequest{IANA: iana, Record: r}).Pack()
			if _, cc, _ := wr.Handle(ctx, hctx, data); cc != 0 {
				t.Errorf("host write queue 2: cc %#x", cc)
			}
		}
	}
	for ctx.Err() == nil {
		data, _ := (&oem.ReadQueueRequest{IANA: iana, Ack: ack}).Pack()
		resp, cc, _ := rd.Handle(ctx, hctx, data)
		if cc != 0 {
			t.Errorf("host read queue 1: cc %#x", cc)
			return
		}
		var rr oem.ReadQueueResponse
		if err := rr.Unpack(resp); err != nil {
			t.Error(err)
			return
		}
		if rr.Empty {
			ack = nil
			time.Sleep(time.Millisecond) // the real agent waits for SMS_ATN
			continue
		}
		ack = &oem.Ack{MsgID: rr.Record.MsgID, Index: rr.Record.Index}
		env, done, err := ra.Add(rr.Record, time.Now())
		if err != nil || !done {
			continue
		}
		hdr, body, err := op.Open(env, time.Now())
		if err != nil {
			t.Errorf("host open: %v", err)
			continue
		}
		req, err := vmsg.DecodeRequest(body)
		if err != nil || hdr.Kind != vmsg.KindRequest {
			t.Errorf("host decode: %v %v", hdr.Kind, err)
			continue
		}
		n, _ := ob.seen.LoadOrStore(req.ID, new(atomic.Int32))
		copies := n.(*atomic.Int32).Add(1)
		if lose := ob.lose.Load(); lose != nil && (*lose)(req, copies) {
			continue
		}
		if ob.alert.Load() {
			send(0, &vmsg.Alert{TimeMs: time.Now().UnixMilli(), Host: "hv1", Principal: "mallory", VM: "db1", Action: "destroy", Reason: "denied"})
		}
		if w := time.Duration(ob.work.Load()); w > 0 && req.Command == vmsg.CmdStatus {
			time.Sleep(w) // the host at work: the time it takes is what this stands for
		}
		rep := &vmsg.Reply{RequestID: req.ID, OK: true}
		switch req.Command {
		case vmsg.CmdList:
			for i := range 12 { // > 223 bytes: several records on queue 2
				rep.VMs = append(rep.VMs, vmsg.VMState{Name: "vm-with-a-long-name-" + strings.Repeat("x", i), State: "running", VCPUs: 1, MemoryKiB: 131072, UptimeSec: 42})
			}
		case vmsg.CmdPing:
			rep.Host = &vmsg.HostInfo{HostID: "hv1", Hostname: "hv1.lab", Hypervisor: "md:" + strconv.Itoa(len(req.Metadata["blob"]))}
		}
		send(rr.Record.Requester, rep)
	}
}

// oobClient is a client of the bench's inventory over an OOB-I channel of
// its own (opts), closed when the test ends.
func (ob *oobBench) oobClient(t *testing.T, opts client.OOBOptions) (*client.Client, *client.OOB) {
	t.Helper()
	oob := client.NewOOB(opts, nil)
	c, err := client.New(ob.inv, client.Options{Via: "oob", OOB: oob})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, oob
}

// warmPings sends ten pings with 700 bytes of metadata (a request of
// several queue 1 records) to h1 and returns their latencies.
func warmPings(ctx context.Context, t *testing.T, c *client.Client) []time.Duration {
	t.Helper()
	blob := strings.Repeat("m", 700)
	var lat []time.Duration
	for range 10 {
		res, err := c.Send(ctx, "h1", &vmsg.Request{Command: vmsg.CmdPing, Metadata: map[string]string{"blob": blob}})
		if err != nil {
			t.Fatal(err)
		}
		if res.Reply.Host == nil || res.Reply.Host.Hypervisor != "md:700" {
			t.Fatalf("ping reply %+v", res.Reply)
		}
		lat = append(lat, res.Latency)
	}
	return lat
}

// wantDrainedAlertKept: both queues are empty, and an alert met while
// polling is kept for Alerts.
func (ob *oobBench) wantDrainedAlertKept(ctx context.Context, t *testing.T, c *client.Client) {
	t.Helper()
	// The fake host acknowledges the last request's record with its next
	// read, which may come just after the VMS has its answer.
	testutil.WaitFor(t, 5*time.Second, "queues drained", func() bool {
		s1, s2 := ob.qs.Status()
		return s1.Depth == 0 && s2.Depth == 0
	})
	ob.wantAlertKept(ctx, t, c)
}

// wantAlertKept: an alert met while polling is kept for Alerts.
func (ob *oobBench) wantAlertKept(ctx context.Context, t *testing.T, c *client.Client) {
	t.Helper()
	ob.alert.Store(true)
	if _, err := c.Do(ctx, "h1", vmsg.CmdStatus, "web1"); err != nil {
		t.Fatal(err)
	}
	al, err := c.Alerts(ctx, "h1")
	if err != nil || len(al) != 1 || al[0].Principal != "mallory" {
		t.Fatalf("alerts %v %+v", err, al)
	}
}

func TestOOBRoundTripThroughBMCSim(t *testing.T) {
	ob := newOOBBench(t, bmcsimtest.Options{})
	c, oob := ob.oobClient(t, client.OOBOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	res, err := c.Do(ctx, "h1", vmsg.CmdList, "")
	if err != nil {
		t.Fatal(err)
	}
	if res.Via != client.ViaOOB || len(res.Reply.VMs) != 12 || res.Reply.RequestID != res.RequestID {
		t.Fatalf("result %+v", res)
	}
	t.Logf("first list over OOB-I (session setup included): %v", res.Latency)

	// A request of several records (queue 1) and timing of warm requests.
	lat := warmPings(ctx, t, c)
	t.Logf("warm OOB-I ping with 700-byte metadata: %v; stats %+v", lat, oob.Stats())
	// One request at a time keeps to one session of the pool (default 3).
	// (A session dropped after transport failures on a loaded machine is
	// replaced, not added to: Reconnects − Dropped.)
	if st := oob.Stats(); st.Reconnects-st.Dropped != 1 {
		t.Fatalf("stats %+v: one request at a time kept %d sessions, want 1", st, st.Reconnects-st.Dropped)
	}
	ob.wantDrainedAlertKept(ctx, t, c)
}

// TestOOBOverRedfish: the same requests, records and sealing with the
// queue commands carried by the BMC's Redfish OEM action (gofish, HTTP
// Basic as the inventory's BMC user, the BMC's certificate pinned by
// bmc.redfish_ca_file): answered "via oob-i (redfish)", queues drained,
// alerts kept.
func TestOOBOverRedfish(t *testing.T) {
	ob := newOOBBench(t, bmcsimtest.Options{})
	c, _ := ob.oobClient(t, client.OOBOptions{Transport: client.TransportRedfish})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := c.Do(ctx, "h1", vmsg.CmdList, "")
	if err != nil {
		t.Fatal(err)
	}
	if res.Via != client.ViaOOBRedfish || len(res.Reply.VMs) != 12 || res.Reply.RequestID != res.RequestID {
		t.Fatalf("result via %q, %d VMs", res.Via, len(res.Reply.VMs))
	}
	lat := warmPings(ctx, t, c)
	t.Logf("warm OOB-I over Redfish ping with 700-byte metadata: %v", lat)
	// The last answer came with the push; its acknowledgement rides on
	// the next read, or on Close.
	testutil.WaitFor(t, 5*time.Second, "queue 1 drained, queue 2 holding at most the last answer", func() bool {
		s1, s2 := ob.qs.Status()
		return s1.Depth == 0 && s2.Depth <= 1
	})
	ob.wantAlertKept(ctx, t, c)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, s2 := ob.qs.Status(); s2.Depth != 0 {
		t.Fatalf("after Close queue 2 still holds %d records", s2.Depth)
	}
}

// TestOOBOverRedfishPush: over Redfish the Queue 2 poller waits on the
// BMC's SSE push: with reads of an empty queue 2 s apart, five requests
// still finish within the deadline (polling alone takes ≥ 2 s each once
// the first read after a request comes back empty).
func TestOOBOverRedfishPush(t *testing.T) {
	ob := newOOBBench(t, bmcsimtest.Options{})
	c, oob := ob.oobClient(t, client.OOBOptions{Transport: client.TransportRedfish, PollMin: 2 * time.Second, PollMax: 2 * time.Second, PollFast: time.Hour, ReAsk: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.Do(ctx, "h1", vmsg.CmdPing, ""); err != nil { // opens the stream
		t.Fatal(err)
	}
	t0 := time.Now()
	before := oob.Stats()
	for range 5 {
		if _, err := c.Do(ctx, "h1", vmsg.CmdPing, ""); err != nil {
			t.Fatal(err)
		}
	}
	if el := time.Since(t0); el >= 4*time.Second {
		t.Errorf("5 pings took %v: the push did not wake the poller", el)
	}
	// The push carries the answer: one read per request (the first, which
	// finds Queue 2 empty and acknowledges the previous answer), not three
	// (empty, the answer, its acknowledgement).
	if n := oob.Stats().Reads - before.Reads; n > 5 {
		t.Errorf("5 pings read Queue 2 %d times, want at most 5: the answers did not come with the push", n)
	}
}

// TestOOBOverRedfishWrongPassword: a refused Redfish login is
// ErrUnauthorized, as over RMCP+.
func TestOOBOverRedfishWrongPassword(t *testing.T) {
	ob := newOOBBench(t, bmcsimtest.Options{})
	if err := os.WriteFile(filepath.Join(ob.dir, "h1.pw"), []byte("wrong-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, _ := ob.oobClient(t, client.OOBOptions{Transport: client.TransportRedfish})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Do(ctx, "h1", vmsg.CmdList, ""); !errors.Is(err, client.ErrUnauthorized) {
		t.Fatalf("err %v, want ErrUnauthorized", err)
	}
}

func TestOOBRetriesLostPackets(t *testing.T) {
	ob := newOOBBench(t, bmcsimtest.Options{Queue1Capacity: 2})
	// Drop every 4th packet towards the BMC and every 5th back, once the
	// session is up: a lost write, a lost write answer, a lost read answer.
	p := startProxy(t, ob.bmc, func(toBMC bool, n int64) bool {
		if toBMC {
			return n%4 == 0
		}
		return n%5 == 0
	})
	ob.inv.Hosts[0].BMC.Addr = p.addr()
	c, oob := ob.oobClient(t, client.OOBOptions{UDPTimeout: 50 * time.Millisecond, UDPRetries: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.Do(ctx, "h1", vmsg.CmdPing, ""); err != nil {
		t.Fatal(err)
	}
	p.on.Store(true)
	blob := strings.Repeat("z", 900) // five records through a queue of two
	for i := range 15 {
		res, err := c.Send(ctx, "h1", &vmsg.Request{Command: vmsg.CmdPing, Metadata: map[string]string{"blob": blob}})
		if err != nil {
			t.Fatalf("request %d: %v (stats %+v)", i, err, oob.Stats())
		}
		if res.Via != client.ViaOOB || res.Reply.Host.Hypervisor != "md:900" {
			t.Fatalf("request %d: %+v", i, res.Reply)
		}
		if n, ok := ob.seen.Load(res.RequestID); !ok || n.(*atomic.Int32).Load() != 1 {
			t.Fatalf("request %d reached the host %v times", i, n)
		}
	}
	if p.dropped.Load() == 0 {
		t.Fatal("the proxy dropped nothing")
	}
	t.Logf("dropped %d packets (%d up, %d down); stats %+v", p.dropped.Load(), p.up.Load(), p.dn.Load(), oob.Stats())
}

func TestOOBWrongPasswordIsUnauthorized(t *testing.T) {
	ob := newOOBBench(t, bmcsimtest.Options{})
	os.WriteFile(filepath.Join(ob.dir, "h1.pw"), []byte("wrong"), 0o600)
	c, _ := client.New(ob.inv, client.Options{Via: "oob"})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.Do(ctx, "h1", vmsg.CmdPing, "")
	if !errors.Is(err, client.ErrUnauthorized) {
		t.Fatalf("err %v, want ErrUnauthorized", err)
	}
}

// TestOOBConcurrentRequests: several goroutines share one OOB-I channel to
// one host: requests in flight together (the window) over one RMCP+ session
// or a pool of them, and each answer reaches the request that asked, never
// another.
func TestOOBConcurrentRequests(t *testing.T) {
	for _, sessions := range []int{1, 3} {
		t.Run(fmt.Sprintf("sessions=%d", sessions), func(t *testing.T) { testOOBConcurrent(t, sessions) })
	}
}

func testOOBConcurrent(t *testing.T, sessions int) {
	ob := newOOBBench(t, bmcsimtest.Options{})
	c, oob := ob.oobClient(t, client.OOBOptions{Window: 4, Sessions: sessions})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const workers, each = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				blob := strings.Repeat("b", w*50+i) // each answer names its request's size
				res, err := c.Send(ctx, "h1", &vmsg.Request{Command: vmsg.CmdPing, Metadata: map[string]string{"blob": blob}})
				switch {
				case err != nil:
					errs <- err
				case res.Reply.RequestID != res.RequestID || res.Reply.Host == nil || res.Reply.Host.Hypervisor != "md:"+strconv.Itoa(len(blob)):
					errs <- fmt.Errorf("worker %d request %d got %+v", w, i, res.Reply)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := oob.Stats()
	if st.Reconnects < 1 || st.Reconnects > sessions || st.Foreign != 0 {
		t.Fatalf("stats %+v: want 1 to %d sessions, no foreign answers", st, sessions)
	}
	ob.seen.Range(func(k, v any) bool {
		if n := v.(*atomic.Int32).Load(); n != 1 {
			t.Errorf("request %v reached the host %d times", k, n)
		}
		return true
	})
}

// TestOOBPollQuietWhileHostWorks: over RMCP+ the poller learns how long
// the host takes to answer a command and, while only one request waits,
// does not read Queue 2 again before 60% of that: a status the host
// serves in 30 ms costs about a dozen reads, not thirty (each command
// has its own average: a ping is not held up by a status's).
func TestOOBPollQuietWhileHostWorks(t *testing.T) {
	ob := newOOBBench(t, bmcsimtest.Options{})
	ob.work.Store(int64(30 * time.Millisecond))
	c, oob := ob.oobClient(t, client.OOBOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range 4 { // learn
		if _, err := c.Do(ctx, "h1", vmsg.CmdStatus, "web1"); err != nil {
			t.Fatal(err)
		}
	}
	before := oob.Stats()
	const n = 5
	for range n {
		if _, err := c.Do(ctx, "h1", vmsg.CmdStatus, "web1"); err != nil {
			t.Fatal(err)
		}
	}
	reads := float64(oob.Stats().Reads-before.Reads) / n
	t.Logf("%.1f queue 2 reads per 30 ms status", reads)
	if reads > 20 {
		t.Errorf("%.1f reads per status: the poller read while the answer could not be there", reads)
	}
}
