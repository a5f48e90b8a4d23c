package client

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ooblab/ooblab/internal/fileio"
	"github.com/ooblab/ooblab/internal/oem"
	"github.com/ooblab/ooblab/internal/record"
	"github.com/ooblab/ooblab/internal/vmsg"
)

// OOBOptions tune the OOB-I channel. Zero values take defaults.
type OOBOptions struct {
	// UDPTimeout is go-ipmi's wait for one UDP answer (default 250 ms).
	UDPTimeout time.Duration
	// UDPRetries are go-ipmi's resends of the same packet (default 2).
	UDPRetries int
	// PollMin and PollMax bound the wait between empty reads of queue 2
	// (defaults 1 ms and 50 ms; after PollFast it doubles while the queue
	// stays empty).
	PollMin, PollMax time.Duration
	// PollFast is how long queue 2 is read every PollMin before the wait
	// starts doubling (default 250 ms): most answers come within it, and
	// a doubling wait would add up to half its length to each answer.
	PollFast time.Duration
	// FullBackoff is the first wait after a 0xC4 (queue full) answer; it
	// doubles up to 1 s (default 20 ms).
	FullBackoff time.Duration
	// ReAsk is how long a delivered request waits for its answer before it
	// is sent again, same request id, new envelope (default 2 s, doubling
	// each time): an answer lost on the way (queue 2 full, the reader
	// evicted, an answer dropped) is then answered again from the host's
	// journal, or, if the action still runs, when it ends; never run twice.
	ReAsk time.Duration
	// Requester is this channel's requester id on every host (default: a
	// random non-zero id, so two VMS processes never share one). Requests
	// carry it in their records; the host addresses its answers to it and
	// the BMC hands them to this reader only.
	Requester uint32
	// Durable asks each BMC to keep this reader's alert log cursor while
	// it does not read, for the BMC's follower TTL (bmcsim 24 h), so a
	// later channel with the same Requester resumes where this one
	// stopped (vmsctl alerts --follower-id). Set it only with a chosen
	// Requester: a durable follower that never comes back holds alerts in
	// the BMC's log for that long. Without it the BMC forgets this
	// follower a minute (its reader TTL) after its last read. A BMC that
	// predates durable followers refuses the flag (0xCC); the channel
	// then reads without it, and says so once.
	Durable bool
	// Window is how many requests to one host may be in flight at once
	// (default 8): their records interleave in queue 1, the host serves
	// them concurrently, and one reader of queue 2 at a time hands each
	// answer to the request that waits for it.
	Window int
	// Sessions is how many RMCP+ sessions to one host the window may use
	// at once (default 3, at most Window). Each OEM command is one round
	// trip on its session; with several, one request's writes do not wait
	// behind another's, nor behind the queue 2 reader. A session beyond
	// the first is opened only when the others are all busy, so one request
	// at a time keeps to one session. The BMC's session limit (bmcsim
	// default 32) is shared by every user; keep this small.
	Sessions int
	// Transport carries the queue commands: TransportIPMI (default, RMCP+)
	// or TransportRedfish (the BMC's Redfish OEM action, as the inventory's
	// BMC user over HTTPS; docs/oob-i.md). The records, sealing and
	// journals are the same.
	Transport string
}

func (o *OOBOptions) defaults() {
	if o.Window <= 0 {
		o.Window = 8
	}
	if o.Sessions <= 0 {
		o.Sessions = 3
	}
	o.Sessions = min(o.Sessions, o.Window)
	if o.UDPTimeout <= 0 {
		o.UDPTimeout = 250 * time.Millisecond
	}
	if o.UDPRetries <= 0 {
		o.UDPRetries = 2
	}
	if o.PollFast <= 0 {
		o.PollFast = 250 * time.Millisecond
	}
	if o.PollMin <= 0 {
		o.PollMin = time.Millisecond
	}
	if o.PollMax <= 0 {
		o.PollMax = 50 * time.Millisecond
	}
	if o.FullBackoff <= 0 {
		o.FullBackoff = 20 * time.Millisecond
	}
	if o.ReAsk <= 0 {
		o.ReAsk = 2 * time.Second
	}
	for o.Requester == 0 {
		var b [4]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
		o.Requester = binary.LittleEndian.Uint32(b[:])
	}
}

// OOB is the channel through the host's BMC: an RMCP+ session per host
// (go-ipmi lanplus, operator privilege, the inventory's cipher suite),
// re-established after a failure. A request is sealed, cut into records and
// written to queue 1 with OEM 0x01, each record retried on timeout (the BMC
// answers a duplicate (msg id, frag) as success, so a retry never queues
// twice) and after 0xC4 with a growing pause; then queue 2 is read with OEM
// 0x06 as this channel's requester id, acknowledging each record by the next
// read, until the Reply or Challenge for the request id is complete. The
// records carry the requester id, the host addresses its answer to it, and
// the BMC shows a reader only its own records: other VMS processes, and
// `vmsctl alerts -f`, never take this channel's answers, nor it theirs.
// Answers to this channel's other request ids met on the way (a late answer
// to an abandoned attempt) are kept for their Exchange. Alerts reads the
// alert log (0x06 with the alert-log flag) from this reader's own cursor.
//
// Requests to one host share a small pool of sessions (Sessions, one RMCP+
// exchange at a time on each) and up to Window of them are in flight: each
// writes its records, then waits for its answer; one of the waiting requests
// at a time reads queue 2 and hands every answer it meets to the request
// that waits for it (by request id), so answers reach only the request that
// asked. The reader's reads may go over any session of the pool: the BMC
// keys a reader by its requester id, not by its session.
type OOB struct {
	opt   OOBOptions
	log   *slog.Logger
	mu    sync.Mutex
	hosts map[string]*oobHost
	rf    redfishConns // TransportRedfish: one client per host (oobredfish.go)
	// Stats count what the channel did, for tests and benchmarks.
	stats OOBStats
	smu   sync.Mutex
}

// OOBStats count OOB-I events.
type OOBStats struct {
	Writes, WriteRetries, FullWaits, Reads int
	// ReAsks counts requests sent again for an answer that did not come
	// within OOBOptions.ReAsk.
	ReAsks int
	// Reconnects counts RMCP+ sessions opened (the first one too, and each
	// further session of the pool); Dropped counts sessions given up after
	// transport failures. Reconnects − Dropped is how many are open or were
	// closed as idle spares.
	Reconnects, Dropped int
	// Foreign counts answers read from queue 2 to request ids this channel
	// never sent: another reader's answers, which the BMC should never hand
	// out. Always 0 with a BMC that honours requester ids.
	Foreign int
}

var _ Channel = (*OOB)(nil)

// NewOOB returns an OOB-I channel.
func NewOOB(opt OOBOptions, log *slog.Logger) *OOB {
	opt.defaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &OOB{opt: opt, log: log, hosts: map[string]*oobHost{}}
}

// Name is ViaOOB.
func (o *OOB) Name() string { return ViaOOB }

// via is Answer.Via: ViaOOB, or ViaOOBRedfish over Redfish.
func (o *OOB) via() string {
	if o.opt.Transport == TransportRedfish {
		return ViaOOBRedfish
	}
	return ViaOOB
}

// Requester is this channel's requester id.
func (o *OOB) Requester() uint32 { return o.opt.Requester }

// Stats returns a copy of the counters.
func (o *OOB) Stats() OOBStats {
	o.smu.Lock()
	defer o.smu.Unlock()
	return o.stats
}

func (o *OOB) count(f func(*OOBStats)) {
	o.smu.Lock()
	f(&o.stats)
	o.smu.Unlock()
}

type oobHost struct {
	iana oem.IANA
	pool sessionPool

	window chan struct{} // requests in flight
	reader chan struct{} // held by the one goroutine reading queue 2
	ack    *oem.Ack      // last record read, not yet acknowledged (reader)
	// pushAcks: records the Redfish push handed over, not yet
	// acknowledged; each later read carries one while ack is nil. acked:
	// the last acknowledgements sent, so a pushed copy of a record read
	// (and acknowledged) already is not acknowledged again (reader).
	pushAcks []oem.Ack
	acked    [16]oem.Ack
	ackedN   int
	target   *Target // for the acknowledgements owed at Close
	// noDurable: the BMC refused the durable follower flag (it predates
	// it); read without it (reader).
	noDurable bool
	ra        *record.Reassembler

	mu      sync.Mutex                   // what follows
	pending map[uint64]vmsg.Message      // answers for request ids nobody waits for
	waiters map[uint64]chan vmsg.Message // requests in flight, by id
	sent    map[uint64]struct{}          // request ids sent, to spot foreign answers
	alerts  alertBuffer
	// expect is how long the host took lately to answer each command
	// (an average, from the request written to its answer in hand): the
	// poller reads less while an answer cannot be there yet.
	expect map[vmsg.Command]time.Duration
}

// expected is how long an answer to cmd takes lately (0: not known yet).
func (h *oobHost) expected(cmd vmsg.Command) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.expect[cmd]
}

// observe adds one answer time for cmd to its average (weight 1/4).
func (h *oobHost) observe(cmd vmsg.Command, d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.expect == nil {
		h.expect = map[vmsg.Command]time.Duration{}
	}
	if old, ok := h.expect[cmd]; ok {
		d = old + (d-old)/4
	}
	h.expect[cmd] = d
}

func (o *OOB) host(t *Target) *oobHost {
	o.mu.Lock()
	defer o.mu.Unlock()
	h, ok := o.hosts[t.Name()]
	if !ok {
		iana := oem.IANA(t.Host.BMC.IANA)
		if iana == 0 {
			iana = oem.DefaultIANA
		}
		h = &oobHost{target: t, iana: iana, pool: newSessionPool(o.opt.Sessions), ra: record.NewReassembler(record.ReassemblerConfig{}), pending: map[uint64]vmsg.Message{}, sent: map[uint64]struct{}{},
			waiters: map[uint64]chan vmsg.Message{}, window: make(chan struct{}, o.opt.Window), reader: make(chan struct{}, 1)}
		o.hosts[t.Name()] = h
	}
	return h
}

// oobSession is one RMCP+ session of a host's pool; whoever took it from
// the pool owns it until it gives it back.
type oobSession struct {
	c     *client.Client
	fails int       // consecutive transport failures
	used  time.Time // last given back
}

// spareIdle is how long a spare session (open, idle, not the most recently
// used) is kept: at the pool's next use after that, a burst's extra
// sessions are closed, before the BMC's inactivity timeout (60 s by
// default) would end them under us. A pool that is not used again keeps
// them until the BMC's timeout ends them or the channel is closed.
const spareIdle = 20 * time.Second

// sessionPool hands out a host's sessions, one user at a time each: an
// open idle session first (the most recently used), a new one only when
// every open one is busy.
type sessionPool struct {
	slots  chan struct{} // one per session in use
	mu     sync.Mutex    // what follows
	idle   []*oobSession // open and not in use
	closed bool
}

func newSessionPool(n int) sessionPool {
	return sessionPool{slots: make(chan struct{}, n)}
}

// get takes a session (nil c: not open yet) when one is free.
func (p *sessionPool) get(ctx context.Context) (*oobSession, error) {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	p.mu.Lock()
	var stale []*oobSession
	for len(p.idle) > 1 && time.Since(p.idle[0].used) > spareIdle {
		stale = append(stale, p.idle[0])
		p.idle = p.idle[1:]
	}
	s := &oobSession{}
	if n := len(p.idle); n > 0 {
		s = p.idle[n-1]
		p.idle = p.idle[:n-1]
	}
	p.mu.Unlock()
	for _, st := range stale {
		go closeSession(st.c)
	}
	return s, nil
}

// put gives s back; an open session is kept for the next get (or closed,
// if the pool was closed meanwhile).
func (p *sessionPool) put(s *oobSession) {
	p.mu.Lock()
	closed := p.closed
	if s.c != nil && !closed {
		s.used = time.Now()
		p.idle = append(p.idle, s)
	}
	p.mu.Unlock()
	<-p.slots
	if closed && s.c != nil {
		closeSession(s.c)
	}
}

// close closes the idle sessions now and the busy ones when they are put.
func (p *sessionPool) close() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range idle {
		wg.Go(func() { closeSession(s.c) })
	}
	wg.Wait()
}

func closeSession(c *client.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = c.Close(ctx)
}

// open makes sure s has an RMCP+ session, opening one if needed.
func (o *OOB) open(ctx context.Context, t *Target, s *oobSession) (*client.Client, error) {
	if s.c != nil {
		return s.c, nil
	}
	c, err := dialBMC(ctx, t, o.opt)
	if err != nil {
		return nil, err
	}
	o.count(func(s *OOBStats) { s.Reconnects++ })
	s.c = c
	return c, nil
}

// dialBMC opens an RMCP+ session with t's BMC (go-ipmi lanplus, the
// inventory's user, password file and cipher suite, 17 by default;
// operator privilege). A refused user is ErrUnauthorized.
func dialBMC(ctx context.Context, t *Target, opt OOBOptions) (*client.Client, error) {
	b := t.Host.BMC
	return dialBMCAs(ctx, t, opt, b.User, b.PasswordFile, types.PrivilegeLevelOperator)
}

// dialBMCAs is dialBMC as user (password in passFile, relative to the
// inventory) at privilege priv.
func dialBMCAs(ctx context.Context, t *Target, opt OOBOptions, user, passFile string, priv types.PrivilegeLevel) (*client.Client, error) {
	// A BMC that answers "insufficient resources" (RMCP+ status 01h) to
	// Open Session or RAKP 1 is busy or backing off a source that failed
	// logins (bmcsim's bounded backoff: seconds, and a spoofer can put the
	// VMS's own address there): that is a wait, not a refusal of our
	// credentials, so try again until ctx ends.
	wait := 250 * time.Millisecond
	for {
		c, err := dialBMCOnce(ctx, t, opt, user, passFile, priv)
		if err == nil || !bmcBusy(err) {
			return c, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (the BMC kept answering it until the deadline)", err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

func dialBMCOnce(ctx context.Context, t *Target, opt OOBOptions, user, passFile string, priv types.PrivilegeLevel) (*client.Client, error) {
	b := t.Host.BMC
	if b.Addr == "" {
		return nil, fmt.Errorf("host %s: no bmc.addr in the inventory", t.Name())
	}
	host, portS, err := net.SplitHostPort(b.Addr)
	if err != nil {
		return nil, fmt.Errorf("host %s bmc.addr %q: %w", t.Name(), b.Addr, err)
	}
	port, err := strconv.Atoi(portS)
	if err != nil {
		return nil, fmt.Errorf("host %s bmc.addr %q: bad port", t.Name(), b.Addr)
	}
	var pass string
	if passFile != "" {
		p, err := fileio.ReadSecret(t.Path(passFile))
		if err != nil {
			return nil, fmt.Errorf("host %s BMC password: %w", t.Name(), err)
		}
		pass = strings.TrimRight(string(p), "\r\n")
	}
	c, err := client.NewClient(host, port, user, pass)
	if err != nil {
		return nil, fmt.Errorf("%w: host %s BMC user: %w", ErrUnauthorized, t.Name(), err)
	}
	suite := b.CipherSuite
	if suite == 0 {
		suite = 17
	}
	// Answers reach go-ipmi only through udpGuard (udpguard.go): checked
	// against the session's keys, so no forged datagram can crash us.
	c.WithUDPProxy(guardDialer{password: pass, dropped: &refusedDatagrams})
	c.WithCipherSuiteID(types.CipherSuiteID(suite)).
		WithTimeout(opt.UDPTimeout).
		WithRetry(opt.UDPRetries).
		WithMaxPrivilegeLevel(priv)
	if err := c.Connect(ctx); err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 50*time.Millisecond)
		_ = c.Close(cctx)
		cancel()
		if bmcBusy(err) {
			return nil, fmt.Errorf("oob-i session with BMC %s: %w", b.Addr, err) // busy or backing off: dialBMCAs waits
		}
		if errors.Is(err, client.ErrRAKPAuthentication) || isAuthFailure(err) {
			return nil, fmt.Errorf("%w: BMC %s refused user %q at %s privilege: %w", ErrUnauthorized, b.Addr, user, priv, err)
		}
		return nil, fmt.Errorf("oob-i session with BMC %s: %w", b.Addr, err)
	}
	return c, nil
}

// bmcBusy is an Open Session or RAKP answered with RMCP+ status 01h,
// "insufficient resources to create a session". go-ipmi v0.9.1's Connect
// joins the per-suite errors with %v (interface_lan.go), which drops the
// *types.RmcpStatusError, so its text is matched too.
func bmcBusy(err error) bool {
	var st *types.RmcpStatusError
	if errors.As(err, &st) {
		return st.StatusCode() == types.RmcpStatusCodeNoResToCreateSess
	}
	return strings.Contains(err.Error(), "RMCP+ status 0x01:")
}

// isAuthFailure recognises RMCP+ status codes that mean bad credentials.
func isAuthFailure(err error) bool {
	s := err.Error()
	for _, w := range []string{"Unauthorized name", "role", "RAKP", "authentication"} {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}

// drop forgets the session after a transport failure.
func (o *OOB) drop(s *oobSession) {
	if s.c == nil {
		return
	}
	c := s.c
	s.c, s.fails = nil, 0
	o.count(func(s *OOBStats) { s.Dropped++ })
	go closeSession(c) // do not hold the host on a dead BMC's CloseSession
}

// raw sends one OEM command and returns its data or an error; a non-zero
// completion code is an *oem.Error.
func (o *OOB) raw(ctx context.Context, t *Target, h *oobHost, cmd oem.Cmd, data []byte) ([]byte, error) {
	if o.opt.Transport == TransportRedfish {
		return o.rawRedfish(ctx, t, cmd, data)
	}
	s, err := h.pool.get(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: oob-i %s to BMC %s: waiting for a session: %w", ErrNotDelivered, cmd, t.Host.BMC.Addr, err)
	}
	defer h.pool.put(s)
	c, err := o.open(ctx, t, s)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotDelivered, err)
	}
	res, err := c.RawCommand(ctx, types.NetFn(oem.NetFnOEMGroupRequest), uint8(cmd), data, cmd.String())
	if err != nil {
		if re, ok := types.IsResponseError(err); ok && re.CompletionCode() != 0 {
			return nil, &oem.Error{Cmd: cmd, Code: oem.CompletionCode(re.CompletionCode())}
		}
		// go-ipmi already resent the packet; after a few such failures in a
		// row the session itself is suspect (BMC restarted, session timed
		// out): open a new one.
		if ctx.Err() != nil {
			// Our deadline, not the BMC's silence: the session is not suspect.
			return nil, fmt.Errorf("oob-i %s to BMC %s: %w", cmd, t.Host.BMC.Addr, err)
		}
		if s.fails++; s.fails >= maxFails {
			o.log.Warn("oob-i: BMC stopped answering in this session; opening a new one", "host", t.Name(), "err", err)
			o.drop(s)
		}
		return nil, fmt.Errorf("oob-i %s to BMC %s: %w", cmd, t.Host.BMC.Addr, err)
	}
	s.fails = 0
	return res.Response, nil
}

// maxFails is how many failed exchanges in a row end a session.
const maxFails = 3

func isCC(err error, cc oem.CompletionCode) bool {
	var e *oem.Error
	return errors.As(err, &e) && e.Code == cc
}

func sleep(ctx context.Context, d time.Duration) error {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Exchange implements Channel.
func (o *OOB) Exchange(ctx context.Context, t *Target, req *vmsg.Request) (*Answer, error) {
	start := time.Now()
	h := o.host(t)
	select {
	case h.window <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: oob-i: waiting for a place in the window to host %s: %w", ErrNotDelivered, t.Name(), ctx.Err())
	}
	defer func() { <-h.window }()
	if o.opt.Transport == TransportRedfish {
		o.push(t) // the stream opens while the request goes out: up before the answer
	}
	h.mu.Lock()
	if m, ok := h.pending[req.ID]; ok && req.Answer == nil {
		delete(h.pending, req.ID)
		h.mu.Unlock()
		return &Answer{Msg: m, Via: o.via(), Latency: time.Since(start)}, nil
	}
	if len(h.sent) >= 4096 {
		// Forget old ids, never those still in flight: their answers
		// would be dropped as foreign and the request would hang.
		clear(h.sent)
		for id := range h.waiters {
			h.sent[id] = struct{}{}
		}
	}
	h.sent[req.ID] = struct{}{}
	ch := make(chan vmsg.Message, 1)
	h.waiters[req.ID] = ch
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		if h.waiters[req.ID] == ch {
			delete(h.waiters, req.ID)
		}
		h.mu.Unlock()
	}()
	delivered := false
	for reask := o.opt.ReAsk; ; reask *= 2 {
		err := o.send(ctx, t, h, req)
		switch {
		case err == nil:
			delivered = true
		case !delivered:
			return nil, err
		case ctx.Err() != nil: // a re-ask cut by the deadline: the first copy was delivered
			return nil, fmt.Errorf("%w: oob-i: host %s through BMC %s: %w", ErrNoAnswer, t.Name(), t.Host.BMC.Addr, ctx.Err())
		default:
			o.log.Debug("oob-i: asking again failed; waiting on", "host", t.Name(), "request", req.ID, "err", err)
		}
		actx, cancel := context.WithTimeout(ctx, reask)
		sentAt, hint := time.Now(), time.Duration(0)
		if reask == o.opt.ReAsk {
			hint = h.expected(req.Command)
		}
		m, err := o.await(actx, t, h, req.ID, ch, hint)
		cancel()
		if err == nil {
			if reask == o.opt.ReAsk && req.Answer == nil {
				h.observe(req.Command, time.Since(sentAt))
			}
			return &Answer{Msg: m, Via: o.via(), Latency: time.Since(start)}, nil
		}
		if ctx.Err() != nil || errors.Is(err, ErrUnauthorized) {
			return nil, fmt.Errorf("%w: %w", ErrNoAnswer, err)
		}
		// No answer within reask: it may have been lost on the way. Ask
		// again with the same request id; the host answers from its
		// journal (or when the running action ends), never runs it twice.
		o.count(func(s *OOBStats) { s.ReAsks++ })
		o.log.Debug("oob-i: no answer yet; asking again with the same request id", "host", t.Name(), "request", req.ID, "after", reask)
	}
}

// send seals req under a new message id and writes its records to queue 1.
// A failure wraps ErrNotDelivered unless the BMC may have accepted every
// record (the last record's write got no answer).
func (o *OOB) send(ctx context.Context, t *Target, h *oobHost, req *vmsg.Request) error {
	msgID, env, err := t.Seal(req)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotDelivered, err)
	}
	recs, err := record.FragmentFor(o.opt.Requester, msgID, env)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotDelivered, err)
	}
	for i, r := range recs {
		maybe, err := o.write(ctx, t, h, r)
		if err == nil {
			continue
		}
		if i < len(recs)-1 || !maybe {
			// The message is incomplete in queue 1 (later records never
			// written) or its last record was refused: the host cannot
			// reassemble it.
			if errors.Is(err, ErrNotDelivered) {
				return err
			}
			return fmt.Errorf("%w: %w", ErrNotDelivered, err)
		}
		return err // the last record may be in queue 1: outcome unknown
	}
	return nil
}

// await waits for the answer to want: handed over by the request reading
// queue 2, or read by this one when it becomes the reader.
func (o *OOB) await(ctx context.Context, t *Target, h *oobHost, want uint64, ch chan vmsg.Message, hint time.Duration) (vmsg.Message, error) {
	select {
	case m := <-ch:
		return m, nil
	case h.reader <- struct{}{}:
		defer func() { <-h.reader }()
		return o.poll(ctx, t, h, want, ch, hint)
	case <-ctx.Done():
		return nil, fmt.Errorf("oob-i: no answer from host %s through BMC %s: %w", t.Name(), t.Host.BMC.Addr, ctx.Err())
	}
}

// write puts one record in queue 1, retrying until ctx ends. maybe is true
// when it failed but an attempt went out on a session and got no answer:
// the BMC may have accepted the record.
func (o *OOB) write(ctx context.Context, t *Target, h *oobHost, r record.Record) (maybe bool, err error) {
	data, err := (&oem.WriteQueueRequest{IANA: h.iana, Record: r}).Pack()
	if err != nil {
		return false, err
	}
	full := o.opt.FullBackoff
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			o.count(func(s *OOBStats) { s.WriteRetries++ })
		}
		o.count(func(s *OOBStats) { s.Writes++ })
		resp, err := o.raw(ctx, t, h, oem.CmdWriteQueue1, data)
		switch {
		case err == nil:
			var wr oem.WriteQueueResponse
			if err := wr.Unpack(resp); err != nil {
				return true, fmt.Errorf("oob-i write answer from BMC %s: %w", t.Host.BMC.Addr, err)
			}
			return false, oem.CheckIANA(wr.IANA, h.iana)
		case isCC(err, oem.CCOutOfSpace):
			o.count(func(s *OOBStats) { s.FullWaits++ })
			o.log.Warn("BMC queue 1 full; waiting for the host to drain it", "host", t.Name(), "wait", full)
			if err := sleep(ctx, full); err != nil {
				return maybe, fmt.Errorf("oob-i BMC %s queue 1 stayed full: %w", t.Host.BMC.Addr, err)
			}
			full = min(2*full, time.Second)
		case isCC(err, oem.CCInsufficientPrivilege):
			return maybe, fmt.Errorf("%w: BMC %s: user %q below operator, or requester id %#x bound to another BMC user: %w",
				ErrUnauthorized, t.Host.BMC.Addr, t.Host.BMC.User, o.opt.Requester, err)
		case errors.Is(err, ErrUnauthorized):
			return maybe, err
		default:
			var oe *oem.Error
			if errors.As(err, &oe) {
				return maybe, fmt.Errorf("oob-i BMC %s refused a record: %w", t.Host.BMC.Addr, err)
			}
			maybe = maybe || !errors.Is(err, ErrNotDelivered) // it went out; its answer did not come
			if ctx.Err() != nil {
				if maybe { // an earlier attempt may have reached it: not "not delivered"
					return maybe, fmt.Errorf("oob-i write to BMC %s: %w (last: %v)", t.Host.BMC.Addr, ctx.Err(), err)
				}
				return maybe, fmt.Errorf("oob-i write to BMC %s: %w (last: %w)", t.Host.BMC.Addr, ctx.Err(), err)
			}
			o.log.Debug("oob-i write failed; retrying the record", "host", t.Name(), "record", r.String(), "err", err)
			if err := sleep(ctx, 10*time.Millisecond); err != nil {
				return maybe, fmt.Errorf("oob-i write to BMC %s: %w", t.Host.BMC.Addr, err)
			}
		}
	}
}

// read does one two-phase read of queue 2 as this channel's reader (with
// the alert log when alerts, as a durable follower with Durable),
// acknowledging the previous record. It returns the record (nil when
// empty) and keeps it as the next ack. The caller holds h.reader.
func (o *OOB) read(ctx context.Context, t *Target, h *oobHost, alerts bool) (*record.Record, error) {
	req := oem.ReadQueue2ForRequest{IANA: h.iana, Reader: o.opt.Requester, Ack: h.ack}
	pushAck := false
	if req.Ack == nil && len(h.pushAcks) > 0 {
		req.Ack, pushAck = &h.pushAcks[0], true
	}
	if alerts {
		req.Flags = oem.ReadAlertLog
		if o.opt.Durable && !h.noDurable {
			req.Flags |= oem.ReadDurable
		}
	}
	data, err := req.Pack()
	if err != nil {
		return nil, err
	}
	o.count(func(s *OOBStats) { s.Reads++ })
	resp, err := o.raw(ctx, t, h, oem.CmdReadQueue2For, data)
	if req.Flags&oem.ReadDurable != 0 && isCC(err, oem.CCInvalidDataField) {
		// A BMC older than the flag refuses it and does nothing else.
		h.noDurable = true
		o.log.Warn("oob-i: this BMC does not keep durable followers; reading the alert log as a follower it forgets after its reader TTL (a later run may miss alerts)",
			"host", t.Name(), "reader", o.opt.Requester)
		return o.read(ctx, t, h, alerts)
	}
	if err != nil {
		if isCC(err, oem.CCInsufficientPrivilege) {
			return nil, fmt.Errorf("%w: BMC %s: user %q below operator, or reader id %#x bound to another BMC user: %w",
				ErrUnauthorized, t.Host.BMC.Addr, t.Host.BMC.User, o.opt.Requester, err)
		}
		return nil, err
	}
	if req.Ack != nil {
		h.acked[h.ackedN%len(h.acked)] = *req.Ack
		h.ackedN++
	}
	if pushAck { // the BMC took it (a record already gone is ignored)
		h.pushAcks = h.pushAcks[1:]
	}
	var rr oem.ReadQueueResponse
	if err := rr.Unpack(resp); err != nil {
		return nil, fmt.Errorf("oob-i read answer from BMC %s: %w", t.Host.BMC.Addr, err)
	}
	if err := oem.CheckIANA(rr.IANA, h.iana); err != nil {
		return nil, err
	}
	if rr.Empty {
		h.ack = nil
		return nil, nil
	}
	h.ack = &oem.Ack{MsgID: rr.Record.MsgID, Index: rr.Record.Index}
	h.pushAcks = slices.DeleteFunc(h.pushAcks, func(a oem.Ack) bool { return a == *h.ack }) // owed once, as h.ack
	return &rr.Record, nil
}

// owePushAck notes that a record the push handed over is to be
// acknowledged, unless it is already owed or was acknowledged lately (a
// copy of a record read before). The caller holds h.reader.
func (h *oobHost) owePushAck(r *record.Record) {
	a := oem.Ack{MsgID: r.MsgID, Index: r.Index}
	if (h.ack != nil && *h.ack == a) || slices.Contains(h.pushAcks, a) || slices.Contains(h.acked[:], a) {
		return
	}
	if len(h.pushAcks) >= pushedRecords {
		h.pushAcks = h.pushAcks[1:] // that one is read (and acknowledged) again
	}
	h.pushAcks = append(h.pushAcks, a)
}

// take adds a record; a completed message is returned when it answers want,
// handed to the request waiting for it, or else stored (alert, or answer to
// a request nobody waits for now).
func (o *OOB) take(t *Target, h *oobHost, r *record.Record, want uint64) vmsg.Message {
	if a := droppedAlert(t, r); a != nil {
		h.mu.Lock()
		h.alerts.add(t.Name(), a)
		h.mu.Unlock()
		return nil
	}
	env, done, err := h.ra.Add(*r, time.Now())
	if err != nil {
		o.log.Warn("oob-i: dropped a bad record from queue 2", "host", t.Name(), "record", r.String(), "err", err)
		return nil
	}
	if !done {
		return nil
	}
	m, err := t.Open(env)
	if err != nil {
		o.log.Warn("oob-i: dropped a message from queue 2 that does not open", "host", t.Name(), "msg", r.MsgID, "err", err)
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if a, ok := m.(*vmsg.Alert); ok {
		h.alerts.add(t.Name(), a)
		return nil
	}
	id := requestIDOf(m)
	if id == want && want != 0 {
		return m
	}
	if _, ok := h.sent[id]; !ok {
		o.count(func(s *OOBStats) { s.Foreign++ })
		o.log.Warn("oob-i: queue 2 handed this reader an answer to a request it did not send; dropped", "host", t.Name(), "request", id, "reader", o.opt.Requester)
		return nil
	}
	if w, ok := h.waiters[id]; ok {
		select {
		case w <- m:
			delete(h.waiters, id)
			return nil
		default: // it has one already (a duplicate answer): keep it for a retry
		}
	}
	if len(h.pending) >= 64 {
		clear(h.pending)
	}
	h.pending[id] = m
	return nil
}

// quiet waits, over RMCP+ while only this request waits for an answer,
// until 60% of hint has passed since start: its answer cannot be there
// yet. It looks again every 2 ms whether another request came, whose
// answer may.
func (o *OOB) quiet(ctx context.Context, h *oobHost, start time.Time, hint, w time.Duration) error {
	if o.opt.Transport == TransportRedfish {
		return nil // the push says when (waitQueue2)
	}
	until := min(hint*6/10, o.opt.PollFast)
	for q := until - time.Since(start); q > w && !h.busy(); q = until - time.Since(start) {
		if err := sleep(ctx, min(q, 2*time.Millisecond)); err != nil {
			return err
		}
	}
	return nil
}

// busy reports whether more than one request waits for an answer.
func (h *oobHost) busy() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.waiters) > 1
}

// poll reads queue 2 until the answer for want (0: the alert log, until
// empty), or until another reader handed it over on ch. The caller holds
// h.reader.
//
// hint is how long the answer usually takes (0: unknown): while only this
// request waits, the poller reads once, then not again before 60% of it.
// Each empty read is one exchange with the BMC, and every CPU the VMS and
// the BMC spend on them is one the host may need (a lab's TCG guest):
// at 1 ms, a 25 ms answer cost 24 reads.
func (o *OOB) poll(ctx context.Context, t *Target, h *oobHost, want uint64, ch chan vmsg.Message, hint time.Duration) (vmsg.Message, error) {
	wait := o.opt.PollMin
	start := time.Now()
	alerts := want == 0
	pushedLast := false // the last wait ended with a pushed record: wait again, do not read
	for {
		select {
		case m := <-ch:
			return m, nil
		default:
		}
		var r *record.Record
		var err error
		if !pushedLast {
			r, err = o.read(ctx, t, h, alerts)
		}
		pushedLast = false
		if err != nil {
			if errors.Is(err, ErrUnauthorized) || ctx.Err() != nil {
				return nil, err
			}
			// A lost UDP exchange: the record we had read may come again
			// (unacknowledged), which the reassembler ignores.
			o.log.Debug("oob-i read failed; polling again", "host", t.Name(), "err", err)
			if err := sleep(ctx, wait); err != nil {
				return nil, fmt.Errorf("oob-i read from BMC %s: %w", t.Host.BMC.Addr, err)
			}
			continue
		}
		if r == nil {
			h.ra.Expire(time.Now())
			if want == 0 {
				return nil, nil
			}
			w := wait
			if h.busy() && w == o.opt.PollMin {
				// Other requests wait too: answers come more often than
				// one per PollMin, and each empty read is one round trip.
				w = max(w/4, 100*time.Microsecond)
			} else if err := o.quiet(ctx, h, start, hint, w); err != nil {
				return nil, fmt.Errorf("oob-i: no answer from host %s through BMC %s: %w", t.Name(), t.Host.BMC.Addr, err)
			}
			pushed, err := o.waitQueue2(ctx, t, w) // a sleep, or the Redfish push (oobredfish.go)
			if err != nil {
				return nil, fmt.Errorf("oob-i: no answer from host %s through BMC %s: %w", t.Name(), t.Host.BMC.Addr, err)
			}
			if pushed != nil {
				// Taken as if read; its acknowledgement rides on a later read.
				h.owePushAck(pushed)
				if m := o.take(t, h, pushed, want); m != nil {
					return m, nil
				}
				// A fragment, another request's answer or a copy of one
				// read already: the rest comes pushed too (or, when the
				// push falls behind, a wake-up without a record: a read).
				pushedLast = true
				continue
			}
			if time.Since(start) > o.opt.PollFast {
				wait = min(2*wait, o.opt.PollMax)
			}
			continue
		}
		wait = o.opt.PollMin
		if m := o.take(t, h, r, want); m != nil {
			if o.opt.Transport == TransportRedfish {
				// Over Redfish the next read acknowledges it (or Close):
				// one HTTPS exchange less before the answer is out.
				return m, nil
			}
			// Acknowledge the answer's last record now; whatever comes
			// next stays queued (unacknowledged) for the next poll.
			if r2, err := o.read(ctx, t, h, alerts); err == nil && r2 != nil {
				o.take(t, h, r2, 0)
			}
			return m, nil
		}
	}
}

// Alerts drains queue 2 and returns the alerts found since the last call.
func (o *OOB) Alerts(ctx context.Context, t *Target) ([]*vmsg.Alert, error) {
	h := o.host(t)
	select {
	case h.reader <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	_, err := o.poll(ctx, t, h, 0, nil, 0)
	<-h.reader
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.alerts.take(t.Name()), err
}

// QueueStatus asks the BMC for both queues' depth.
func (o *OOB) QueueStatus(ctx context.Context, t *Target) (q1, q2 oem.QueueStatus, err error) {
	h := o.host(t)
	data, _ := (&oem.GetQueueStatusRequest{IANA: h.iana}).Pack()
	resp, err := o.raw(ctx, t, h, oem.CmdGetQueueStatus, data)
	if err != nil {
		return q1, q2, err
	}
	var r oem.GetQueueStatusResponse
	if err := r.Unpack(resp); err != nil {
		return q1, q2, err
	}
	return r.Queue1, r.Queue2, nil
}

// Close ends every session, acknowledging nothing further: a record read but
// not acknowledged stays in queue 2 for the next reader.
func (o *OOB) Close() error {
	o.mu.Lock()
	hs := o.hosts
	o.hosts = map[string]*oobHost{}
	o.mu.Unlock()
	var wg sync.WaitGroup
	for _, h := range hs {
		wg.Go(func() {
			o.flushAcks(h)
			h.pool.close()
		})
	}
	wg.Wait()
	o.closeRedfish()
	return nil
}
