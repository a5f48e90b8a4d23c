// Command oob measures the OOB-I path VMS → BMC → system interface on
// loopback, and how much of it sealing costs. One in-process bmcsim BMC (RMCP+
// LAN on UDP, OEM queues, QEMU chardev system interface on TCP) sits between
// a VMS (go-ipmi lanplus session, cipher suite 17, operator: the session
// vmsctl/client's OOB-I channel opens) and a host (hvagent's OOB loop over the
// chardev client, as the agent runs it in tests).
//
// For each message size it sends, one message in flight at a time, and
// interleaved message by message so that machine noise hits both alike:
//
//   - sealed:   seal (internal/seal, AES-256-GCM under the TOTP-derived key)
//     → records → OEM 0x01 writes → Queue 1 → attention → host loop reads
//     (OEM 0x02, two-phase) → reassemble → open. Latency is from the start of
//     sealing to the host holding the opened body.
//   - unsealed: the same bytes as the record payload, the same path, no seal
//     and no open.
//
// and separately:
//
//   - seal+open alone: the CPU cost of sealing and opening the same body, no
//     I/O.
//   - round trip: vmsctl/client's OOB-I channel (Exchange) sends a sealed
//     Request carrying the bytes as metadata; the host opens it and answers a
//     small sealed Reply through Queue 2, which the client polls.
//
// Throughput is message bytes delivered divided by the time the messages of
// that kind took (one in flight), so it is 1/latency scaled by the size.
//
// Then the request-rate rows: small sealed pings through one vmsctl/client
// OOB-I channel, 1 requester against -rate-requesters (8) sharing it,
// interleaved round by round (-rate-rounds of -rate-time), for each
// -rate-work (host time per request). They print the median rates, their
// ratio and the median of per-round ratios, per-request latency, and how
// many exchanges were asked again (same request id) after 5 s without an
// answer. -rate-sessions sets the channel's RMCP+ session pool,
// -rate-cpuprofile writes a CPU profile of these rows (BMC, VMS and host
// share the process).
//
//	go run ./bench/oob -sizes 200,4096,65536 -time 4s
package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	ipmiclient "github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ooblab/ooblab/bench/results"
	"github.com/ooblab/ooblab/bmcsim/bmcsimtest"
	"github.com/ooblab/ooblab/bmcsim/config"
	"github.com/ooblab/ooblab/bmcsim/queue"
	"github.com/ooblab/ooblab/hvagent/oob"
	"github.com/ooblab/ooblab/hvagent/sysif/chardev"
	"github.com/ooblab/ooblab/internal/inventory"
	"github.com/ooblab/ooblab/internal/oem"
	"github.com/ooblab/ooblab/internal/record"
	"github.com/ooblab/ooblab/internal/seal"
	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

const (
	vmsUser = "vms"
	vmsPass = "bench-oob-secret"
)

func main() {
	var (
		sizesF  = flag.String("sizes", "200,4096,65536", "message sizes in bytes, comma-separated")
		dur     = flag.Duration("time", 4*time.Second, "measured time per size for the interleaved one-way rows")
		rtDur   = flag.Duration("rt-time", 2*time.Second, "measured time per size for the round-trip row")
		minMsgs = flag.Int("min", 6, "at least this many messages per kind and size, even past -time")
		state   = flag.Bool("state", false, "journal the queues on disk (bmcsim --state: one fsync per record put and remove)")
		jsonF   = flag.String("json", "", "also write the figures to FILE (bench/results format)")
		workF   = flag.String("rate-work", "0s,2ms", "host time per request for the request-rate rows (a libvirt call), comma-separated")
	)
	flag.IntVar(&rateMany, "rate-requesters", 8, "concurrent requesters of the request-rate row (against 1)")
	flag.IntVar(&rateRounds, "rate-rounds", 3, "interleaved rounds of the request-rate rows")
	flag.DurationVar(&rateDur, "rate-time", time.Second, "measured time per request-rate round and requester count")
	flag.StringVar(&rateProfile, "rate-cpuprofile", "", "write a CPU profile of the request-rate rows (BMC, client and host alike: one process) to FILE")
	flag.IntVar(&rateSessions, "rate-sessions", 0, "RMCP+ sessions the request-rate channel may use (vmsctl/client OOBOptions.Sessions; 0: its default)")
	flag.Parse()
	for _, w := range strings.Split(*workF, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(w))
		if err != nil || d < 0 {
			fatalf("-rate-work: bad duration %q", w)
		}
		rateWork = append(rateWork, d)
	}
	var sizes []int
	for _, s := range strings.Split(*sizesF, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 || n > record.MaxMessage/2 {
			fatalf("-sizes: bad size %q", s)
		}
		sizes = append(sizes, n)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, sizes, *dur, *rtDur, *minMsgs, *state, *jsonF); err != nil {
		fatalf("%v", err)
	}
}

// The request-rate rows (flags).
var (
	rateWork   []time.Duration
	rateMany   int
	rateRounds int
	rateDur    time.Duration
	// rateProfile is a CPU profile file for the rate rows; rateSessions
	// the channel's session pool.
	rateProfile  string
	rateSessions int
	// rateLost counts exchanges of the rate rows asked again after 5 s
	// without an answer.
	rateLost atomic.Int64
)

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench/oob: "+format+"\n", args...)
	os.Exit(1)
}

// lab is the BMC, the host loop and the VMS session.
type lab struct {
	key    *seal.Key
	sealer *seal.Sealer
	lanAdr string
	vms    *ipmiclient.Client
	loop   *oob.Loop
	h      *host
	qs     *queue.Queues
}

// host is the loop's handler: it opens sealed envelopes (or takes raw bytes)
// and reports each delivery on got.
type host struct {
	sealed  atomic.Bool // what the message in flight is
	reply   atomic.Bool // answer a Reply (round-trip rows)
	opener  *seal.Opener
	sealer  *seal.Sealer
	work    time.Duration // time each request takes on the host (rate rows)
	got     chan delivery
	openErr atomic.Int64
}

type delivery struct {
	at  time.Time
	n   int
	err error
}

func (h *host) HandleEnvelope(_ context.Context, env []byte, _ string) ([][]byte, error) {
	if !h.sealed.Load() {
		h.got <- delivery{at: time.Now(), n: len(env)}
		return nil, nil
	}
	hdr, body, err := h.opener.Open(env, time.Now())
	if err != nil {
		h.openErr.Add(1)
		h.got <- delivery{at: time.Now(), err: err}
		return nil, err
	}
	if !h.reply.Load() {
		h.got <- delivery{at: time.Now(), n: len(body)}
		return nil, nil
	}
	req, err := vmsg.DecodeRequest(body)
	if err != nil || hdr.Kind != vmsg.KindRequest {
		return nil, fmt.Errorf("not a request: %v", err)
	}
	if h.work > 0 {
		time.Sleep(h.work) // stands for the hypervisor call
	}
	_, rb, err := vmsg.Encode(&vmsg.Reply{RequestID: req.ID, OK: true})
	if err != nil {
		return nil, err
	}
	out, err := h.sealer.Seal(vmsg.KindReply, randU64(), rb, time.Now())
	if err != nil {
		return nil, err
	}
	return [][]byte{out}, nil
}

func randU64() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:]) | 1
}

func setup(ctx context.Context, stateDir string) (*lab, func(), error) {
	log := slog.New(slog.DiscardHandler)
	b, err := bmcsimtest.New(bmcsimtest.Options{Name: "bench", State: stateDir, Logger: log,
		Users:          []config.User{{Name: vmsUser, Password: vmsPass, Privilege: "operator"}},
		Queue1Capacity: 4096, Queue2Capacity: 4096})
	if err != nil {
		return nil, nil, err
	}
	qs := b.Queues
	bctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	stop := func() {
		cancel()
		wg.Wait()
		_ = b.Stop()
	}
	hc, err := chardev.Dial(ctx, b.KCSAddr(), chardev.WithLogger(log))
	if err != nil {
		stop()
		return nil, nil, err
	}

	key, err := seal.Enroll("bench-host")
	if err != nil {
		stop()
		return nil, nil, err
	}
	// The replay window holds every message id of the last ~90 s; the
	// default (4096) would refuse a benchmark's sustained rate.
	h := &host{opener: seal.NewOpener(key, seal.OpenerOptions{MaxSeen: 1 << 20}), sealer: seal.NewSealer(key), got: make(chan delivery, 1)}
	loop := oob.New(oob.Config{Conn: hc, Handler: h, PollInterval: 20 * time.Millisecond, Logger: log})
	wg.Go(func() { _ = loop.Run(bctx) })

	lanAdr := b.LAN
	vms, err := ipmiclient.NewClient("127.0.0.1", b.Port, vmsUser, vmsPass)
	if err != nil {
		stop()
		return nil, nil, err
	}
	vms.WithCipherSuiteID(types.CipherSuiteID17).WithTimeout(2 * time.Second).WithRetry(2).WithMaxPrivilegeLevel(types.PrivilegeLevelOperator)
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	defer ccancel()
	if err := vms.Connect(cctx); err != nil {
		stop()
		return nil, nil, fmt.Errorf("RMCP+ session: %w", err)
	}
	l := &lab{key: key, sealer: seal.NewSealer(key), lanAdr: lanAdr, vms: vms, loop: loop, h: h, qs: qs}
	return l, func() {
		_ = vms.Close(context.Background())
		stop()
		hc.Close()
	}, nil
}

// write puts every record of msg in Queue 1, waiting out 0xC4.
func (l *lab) write(ctx context.Context, msgID uint64, msg []byte) error {
	recs, err := record.Fragment(msgID, msg)
	if err != nil {
		return err
	}
	for _, r := range recs {
		data, err := (&oem.WriteQueueRequest{IANA: oem.DefaultIANA, Record: r}).Pack()
		if err != nil {
			return err
		}
		for {
			_, err := l.vms.RawCommand(ctx, types.NetFn(oem.NetFnOEMGroupRequest), uint8(oem.CmdWriteQueue1), data, "write queue 1")
			if re, ok := types.IsResponseError(err); ok && oem.CompletionCode(re.CompletionCode()) == oem.CCOutOfSpace {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(time.Millisecond):
				}
				continue
			}
			if err != nil {
				return err
			}
			break
		}
	}
	return nil
}

// oneWay sends body once, sealed or not, and returns the time from the start
// (of sealing) to the host holding the (opened) body.
func (l *lab) oneWay(ctx context.Context, body []byte, sealed bool) (time.Duration, error) {
	l.h.sealed.Store(sealed)
	start := time.Now()
	msgID := randU64()
	msg := body
	if sealed {
		var err error
		if msg, err = l.sealer.Seal(vmsg.KindRequest, msgID, body, start); err != nil {
			return 0, err
		}
	}
	if err := l.write(ctx, msgID, msg); err != nil {
		return 0, err
	}
	select {
	case d := <-l.h.got:
		if d.err != nil {
			return 0, d.err
		}
		if d.n != len(body) {
			return 0, fmt.Errorf("host got %d bytes, sent %d", d.n, len(body))
		}
		return d.at.Sub(start), nil
	case <-time.After(30 * time.Second):
		return 0, fmt.Errorf("%d B message not delivered in 30 s (loop %+v)", len(body), l.loop.Stats())
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

type series struct {
	lat   []time.Duration
	bytes int64
}

func (s *series) add(d time.Duration, n int) {
	s.lat = append(s.lat, d)
	s.bytes += int64(n)
}

func (s *series) total() time.Duration {
	var t time.Duration
	for _, d := range s.lat {
		t += d
	}
	return t
}

func (s *series) q(p float64) time.Duration {
	l := slices.Clone(s.lat)
	slices.Sort(l)
	i := int(p * float64(len(l)-1))
	return l[i]
}

// rate is bytes per second over the time the messages took.
func (s *series) rate() float64 { return float64(s.bytes) / s.total().Seconds() }

// sealOpen times seal+open of size bytes alone: the median of batches
// (each about d/5), so a burst of other load on the machine counts less.
func sealOpen(key *seal.Key, size int, d time.Duration) (time.Duration, error) {
	body := make([]byte, size)
	_, _ = rand.Read(body)
	sl := seal.NewSealer(key)
	var per []time.Duration
	id := uint64(0)
	for range 5 {
		// A fresh opener per batch keeps its replay window small.
		op := seal.NewOpener(key, seal.OpenerOptions{MaxSeen: 1 << 20})
		n := 0
		start := time.Now()
		for time.Since(start) < d/5 || n < 10 {
			id++
			now := time.Now()
			env, err := sl.Seal(vmsg.KindRequest, id, body, now)
			if err != nil {
				return 0, err
			}
			_, got, err := op.Open(env, now)
			if err != nil {
				return 0, err
			}
			if len(got) != size {
				return 0, errors.New("seal/open changed the body")
			}
			n++
		}
		per = append(per, time.Since(start)/time.Duration(n))
	}
	slices.Sort(per)
	return per[len(per)/2], nil
}

// drainDeliveries discards the host's delivery reports until the returned
// stop is called or ctx ends: the handler answers through Queue 2, and a
// measurement that waits on the answer does not read l.h.got.
func (l *lab) drainDeliveries(ctx context.Context) (stop func()) {
	drain, stop := context.WithCancel(ctx)
	go func() {
		for {
			select {
			case <-l.h.got:
			case <-drain.Done():
				return
			}
		}
	}()
	return stop
}

// roundTrip runs vmsctl/client's OOB-I Exchange with a request carrying
// size bytes of metadata, for about d.
func (l *lab) roundTrip(ctx context.Context, size int, d time.Duration, minN int, dir string) (*series, error) {
	l.h.sealed.Store(true)
	l.h.reply.Store(true)
	defer l.h.reply.Store(false)
	defer l.drainDeliveries(ctx)()
	och, tg := l.channel(dir)
	defer och.Close()
	// The metadata value is text; its CBOR encoding adds a few bytes.
	blob := strings.Repeat("x", size)
	s := &series{}
	// The first exchange opens the session: not measured.
	if _, err := och.Exchange(ctx, tg, &vmsg.Request{ID: randU64(), Principal: "bench", Command: vmsg.CmdPing}); err != nil {
		return nil, err
	}
	start := time.Now()
	for time.Since(start) < d || len(s.lat) < minN {
		req := &vmsg.Request{ID: randU64(), Principal: "bench", Command: vmsg.CmdPing, IssuedMs: time.Now().UnixMilli(), Metadata: map[string]string{"b": blob}}
		t0 := time.Now()
		ans, err := och.Exchange(ctx, tg, req)
		if err != nil {
			return nil, err
		}
		if r, ok := ans.Msg.(*vmsg.Reply); !ok || r.RequestID != req.ID || !r.OK {
			return nil, fmt.Errorf("round trip: answer %+v", ans.Msg)
		}
		s.add(time.Since(t0), size)
	}
	return s, nil
}

// rate is the OOB-I request rate (requests/s) with workers goroutines
// sharing one vmsctl/client OOB-I channel (its RMCP+ session pool, the window),
// each sending small pings one after another for about d.
func (l *lab) rate(ctx context.Context, och *client.OOB, tg *client.Target, workers int, d time.Duration, lat *series) (float64, error) {
	var n atomic.Int64
	var lmu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for time.Since(start) < d {
				req := &vmsg.Request{ID: randU64(), Principal: "bench", Command: vmsg.CmdPing, IssuedMs: time.Now().UnixMilli()}
				t0 := time.Now()
				var ans *client.Answer
				var err error
				for try := 0; ; try++ {
					// A lost answer would hang the row: ask again with the
					// same request id after 5 s (as vmsctl's fallback does),
					// and count it.
					ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
					ans, err = och.Exchange(ectx, tg, req)
					cancel()
					if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) || try == 3 {
						break
					}
					rateLost.Add(1)
				}
				el := time.Since(t0)
				if err != nil {
					errs <- err
					return
				}
				if r, ok := ans.Msg.(*vmsg.Reply); !ok || r.RequestID != req.ID {
					errs <- fmt.Errorf("rate: answer %+v for request %d", ans.Msg, req.ID)
					return
				}
				n.Add(1)
				lmu.Lock()
				lat.add(el, 0)
				lmu.Unlock()
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	close(errs)
	for err := range errs {
		return 0, err
	}
	return float64(n.Load()) / el.Seconds(), nil
}

// rates measures 1 and many requesters, interleaved round by round, and
// returns the per-round rates of each.
func (l *lab) rates(ctx context.Context, many, rounds int, d time.Duration, work time.Duration, dir string) (one, multi []float64, oneLat, multiLat *series, err error) {
	oneLat, multiLat = &series{}, &series{}
	l.h.sealed.Store(true)
	l.h.reply.Store(true)
	l.h.work = work
	defer func() { l.h.reply.Store(false); l.h.work = 0 }()
	defer l.drainDeliveries(ctx)()
	och, tg := l.channel(dir)
	defer och.Close()
	if _, err := och.Exchange(ctx, tg, &vmsg.Request{ID: randU64(), Principal: "bench", Command: vmsg.CmdPing}); err != nil {
		return nil, nil, nil, nil, err
	}
	for i := range rounds {
		order := []int{1, many}
		if i%2 == 1 {
			order = []int{many, 1}
		}
		for _, w := range order {
			lat := multiLat
			if w == 1 {
				lat = oneLat
			}
			r, err := l.rate(ctx, och, tg, w, d, lat)
			if err != nil {
				return nil, nil, nil, nil, fmt.Errorf("%d requesters: %w", w, err)
			}
			if w == 1 {
				one = append(one, r)
			} else {
				multi = append(multi, r)
			}
		}
	}
	fmt.Fprintf(os.Stderr, "rate rows, host work %v: channel %+v\n", work, och.Stats())
	return one, multi, oneLat, multiLat, nil
}

// channel is a vmsctl/client OOB-I channel and target for the lab's BMC.
func (l *lab) channel(dir string) (*client.OOB, *client.Target) {
	write := func(name, s string) string {
		_ = os.WriteFile(filepath.Join(dir, name), []byte(s), 0o600)
		return name
	}
	inv := &inventory.Inventory{Principal: "bench", Dir: dir, Hosts: []inventory.Host{{
		Name: "h", HostID: l.key.HostID(), SecretFile: write("key", l.key.URI()+"\n"),
		BMC: inventory.BMC{Addr: l.lanAdr, User: vmsUser, PasswordFile: write("pw", vmsPass+"\n"), CipherSuite: 17},
	}}}
	return client.NewOOB(client.OOBOptions{Sessions: rateSessions}, nil), client.NewTarget(inv, inv.Hosts[0], nil)
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func run(ctx context.Context, sizes []int, dur, rtDur time.Duration, minN int, state bool, jsonPath string) error {
	tmp, err := os.MkdirTemp("", "ooblab-bench-oob")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	stateDir := ""
	if state {
		stateDir = filepath.Join(tmp, "state")
	}
	l, done, err := setup(ctx, stateDir)
	if err != nil {
		return err
	}
	defer done()

	var rows []row
	for _, size := range sizes {
		body := make([]byte, size)
		_, _ = rand.Read(body)
		r := row{size: size, sealed: &series{}, raw: &series{}}
		env, _ := l.sealer.Seal(vmsg.KindRequest, 1, body, time.Now())
		r.envLen = len(env)
		r.nRecords = (len(env) + record.MaxPayload - 1) / record.MaxPayload
		r.rawRecords = (size + record.MaxPayload - 1) / record.MaxPayload
		// Warm-up: one of each.
		for _, s := range []bool{true, false} {
			if _, err := l.oneWay(ctx, body, s); err != nil {
				return fmt.Errorf("%d B warm-up: %w", size, err)
			}
		}
		start := time.Now()
		for i := 0; time.Since(start) < dur || len(r.sealed.lat) < minN || len(r.raw.lat) < minN; i++ {
			sealed := i%2 == 0
			if size > 1024 && i%4 >= 2 { // alternate which goes first
				sealed = !sealed
			}
			d, err := l.oneWay(ctx, body, sealed)
			if err != nil {
				return fmt.Errorf("%d B (sealed %v): %w", size, sealed, err)
			}
			if sealed {
				r.sealed.add(d, size)
			} else {
				r.raw.add(d, size)
			}
		}
		if r.crypto, err = sealOpen(l.key, size, 300*time.Millisecond); err != nil {
			return err
		}
		if r.rt, err = l.roundTrip(ctx, size, rtDur, minN, tmp); err != nil {
			return fmt.Errorf("%d B round trip: %w", size, err)
		}
		rows = append(rows, r)
	}

	// Request rate, 1 vs 8 requesters sharing one channel; the host takes
	// -rate-work per request (a libvirt call's time), served concurrently.
	var rr []rateRow
	if rateProfile != "" {
		f, err := os.Create(rateProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	for _, work := range rateWork {
		one, multi, oneLat, multiLat, err := l.rates(ctx, rateMany, rateRounds, rateDur, work, tmp)
		if err != nil {
			return fmt.Errorf("request rate: %w", err)
		}
		rr = append(rr, rateRow{work: work, one: one, multi: multi, many: rateMany, oneLat: oneLat, multiLat: multiLat})
	}
	if rateProfile != "" {
		pprof.StopCPUProfile()
	}

	q1, q2 := l.qs.Status()
	journal := "in memory (no --state)"
	if state {
		journal = "journaled on disk (--state, fsync per put/remove)"
	}
	fmt.Printf("OOB-I VMS → BMC → system interface on loopback: in-process bmcsim (queues %s), RMCP+ suite 17 (go-ipmi),\n", journal)
	fmt.Printf("host = hvagent/oob loop over the chardev client (attention wake-up); one message in flight; GOMAXPROCS=%d, %d CPUs;\n", runtime.GOMAXPROCS(0), runtime.NumCPU())
	fmt.Printf("sealed and unsealed messages interleaved one by one; load average %s\n\n", results.LoadAvg())
	tw := tabwriter.NewWriter(os.Stdout, 2, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "size\t|\tsealed n\trecords\tmedian\tp99\tKB/s\t|\tunsealed n\trecords\tmedian\tp99\tKB/s\t|\tseal+open alone\tshare of sealed median\tsealed−unsealed median\t|\tround trip n\tmedian\tp99\tKB/s\t")
	for _, r := range rows {
		share := float64(r.crypto) / float64(r.sealed.q(0.5))
		diff := r.sealed.q(0.5) - r.raw.q(0.5)
		fmt.Fprintf(tw, "%d B\t|\t%d\t%d\t%s\t%s\t%.1f\t|\t%d\t%d\t%s\t%s\t%.1f\t|\t%s\t%.1f%%\t%s\t|\t%d\t%s\t%s\t%.1f\t\n",
			r.size,
			len(r.sealed.lat), r.nRecords, us(r.sealed.q(0.5)), us(r.sealed.q(0.99)), r.sealed.rate()/1000,
			len(r.raw.lat), r.rawRecords, us(r.raw.q(0.5)), us(r.raw.q(0.99)), r.raw.rate()/1000,
			us(r.crypto), 100*share, usSigned(diff),
			len(r.rt.lat), us(r.rt.q(0.5)), us(r.rt.q(0.99)), r.rt.rate()/1000)
	}
	tw.Flush()
	fmt.Printf("\nrecords per message: the sealed envelope is the body + %d bytes of header and tag; %d payload bytes fit a record.\n", rows[0].envLen-rows[0].size, record.MaxPayload)
	fmt.Println("seal+open alone: HKDF key derivation + AES-256-GCM seal and open of the same body, no I/O (CPU only).")
	fmt.Println("round trip: vmsctl/client OOB-I Exchange, the bytes as request metadata, a small sealed Reply back via Queue 2 (polled).")
	sessions := "default"
	if rateSessions > 0 {
		sessions = strconv.Itoa(rateSessions)
	}
	fmt.Printf("\nOOB-I request rate (small pings), 1 vs %d requesters sharing one vmsctl/client channel (RMCP+ sessions: %s, window %d), %d rounds of %v, interleaved:\n",
		rateMany, sessions, 8, rateRounds, rateDur)
	tw = tabwriter.NewWriter(os.Stdout, 2, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "host work per request	|	1 requester req/s	"+strconv.Itoa(rateMany)+" requesters req/s	ratio	goal ≥3×	|	median of per-round ratios	|	1 req latency median	p90	"+strconv.Itoa(rateMany)+" req latency median	p90	|	rounds 1 / many req/s	")
	for _, r := range rr {
		ratio := median(r.multi) / median(r.one)
		met := "missed"
		if ratio >= 3 {
			met = "met"
		}
		var pr []float64 // ratio within each round
		for i := range min(len(r.one), len(r.multi)) {
			pr = append(pr, r.multi[i]/r.one[i])
		}
		fmt.Fprintf(tw, "%v	|	%.0f	%.0f	%.2f×	%s	|	%.2f×	|	%s	%s	%s	%s	|	%s / %s	\n", r.work, median(r.one), median(r.multi), ratio, met, median(pr),
			us(r.oneLat.q(0.5)), us(r.oneLat.q(0.9)), us(r.multiLat.q(0.5)), us(r.multiLat.q(0.9)), rounds(r.one), rounds(r.multi))
	}
	tw.Flush()
	fmt.Printf("rate rows: %d exchanges asked again after 5 s without an answer\n", rateLost.Load())
	fmt.Printf("host loop %+v; open errors %d; queues at end: q1 %d q2 %d\n", l.loop.Stats(), l.h.openErr.Load(), q1.Depth, q2.Depth)
	if jsonPath != "" {
		sec := oobSection(rows, journal)
		sec.Tables = append(sec.Tables, rateTable(rr))
		return sec.WriteFile(jsonPath)
	}
	return nil
}

func rounds(xs []float64) string {
	var b strings.Builder
	for i, x := range xs {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%.0f", x)
	}
	return b.String()
}

func us(d time.Duration) string {
	switch {
	case d >= 100*time.Millisecond:
		return fmt.Sprintf("%.0f ms", float64(d)/1e6)
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.1f µs", float64(d)/1e3)
	}
}

func usSigned(d time.Duration) string {
	if d < 0 {
		return "−" + us(-d)
	}
	return "+" + us(d)
}
