// Package client is the VMS side of ooblab: it sends sealed vms_message
// requests to hvagent on a hypervisor host and returns its answers, over the
// host's management network (VMM-I, TLS) or through the host's BMC (OOB-I,
// IPMI over LAN, OEM queue commands). Another VMS can use it on its own.
//
//	Client.Do(host, cmd, vm)
//	   │ one request id for the whole command, fresh issue time per send
//	   ▼
//	Channel ── "vmm-i": TLS 1.3, one kept connection per host, 4-byte frames
//	        ── "oob-i": RMCP+ session per host; seal → records → OEM 0x01
//	        │           (queue 1); poll OEM 0x04 (queue 2, acked) → reassemble
//	        ── "auto":  VMM-I within a short budget, health-tracked, then OOB-I
//	   ▼
//	Reply → Result{Reply, Via, Latency}; Challenge → ChallengeFunc → resend the
//	same request id with the answer (nonce + code).
//
// Every transmission is a new sealed envelope with a new message id (the
// agent's opener refuses a replayed envelope); the request id inside stays the
// same, so the agent, which deduplicates by request id, never runs a command
// twice when a fallback or a retry sends it again.
//
// A failed command is a *RequestError naming host and request id; what it
// says about the request is ErrUnreachable (delivered on no channel: safe
// to run again) or ErrOutcomeUnknown (delivered, or maybe, and no final
// answer: look the outcome up with Client.Lookup, errors.go).
package client

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/ooblab/ooblab/internal/fileio"
	"github.com/ooblab/ooblab/internal/ident"
	"github.com/ooblab/ooblab/internal/inventory"
	"github.com/ooblab/ooblab/internal/seal"
	"github.com/ooblab/ooblab/internal/vmsg"
)

// Channel names, as reported in Result.Via.
const (
	ViaVMMI = "vmm-i"
	ViaOOB  = "oob-i"
	ViaAuto = "auto"
)

// Answer is what a Channel got back for a request.
type Answer struct {
	// Msg is a *vmsg.Reply or a *vmsg.Challenge for the request's id.
	Msg vmsg.Message
	// Via is the channel that carried it (ViaVMMI or ViaOOB).
	Via string
	// Latency is from the start of the Exchange to the answer.
	Latency time.Duration
	// Executed is the channel that carried the request the agent ran,
	// where known ("" when the request went over both and either may have
	// reached the agent first). Set by the auto channel.
	Executed string
	// Sent lists the channels the request was handed to, in order, when
	// more than one (auto failover).
	Sent []string
}

// Channel carries one request to a host and returns the agent's answer for
// that request id. Implementations are safe for concurrent use.
type Channel interface {
	// Name is ViaVMMI, ViaOOB or ViaAuto.
	Name() string
	// Exchange seals req for t, sends it and waits, within ctx, for the
	// Reply or Challenge that carries req.ID. A transport failure returns
	// an error (wrapping ErrUnauthorized when credentials were refused).
	Exchange(ctx context.Context, t *Target, req *vmsg.Request) (*Answer, error)
	// Alerts returns the alerts received from t since the last call. It may
	// use ctx to fetch pending ones (the OOB-I drains queue 2).
	Alerts(ctx context.Context, t *Target) ([]*vmsg.Alert, error)
	// Close releases connections and sessions.
	Close() error
}

// Target is one inventory host with its sealing key, shared by the channels.
type Target struct {
	Host inventory.Host
	// Inv resolves the host's relative file names; its Principal is who
	// the client speaks as (its key signs, its VMM-I client certificate is
	// presented), so a Client with Options.Principal gets a copy.
	Inv *inventory.Inventory

	now  func() time.Time
	once sync.Once
	err  error
	key  *seal.Key
	sl   *seal.Sealer
	op   *seal.Opener

	kmu  sync.Mutex
	keys map[string]ed25519.PrivateKey // principal → signing key, loaded on use
}

// PrincipalName is who the client speaks as: the inventory's principal.
func (t *Target) PrincipalName() string {
	if t.Inv == nil {
		return ""
	}
	return t.Inv.Principal
}

// signer returns principal's private key from the inventory's credentials
// (nil when the inventory has none for it: the request goes unsigned and
// the agent refuses it, saying so).
func (t *Target) signer(principal string) (ed25519.PrivateKey, error) {
	if t.Inv == nil {
		return nil, nil
	}
	cr, ok := t.Inv.Credential(principal)
	if !ok || cr.KeyFile == "" {
		return nil, nil
	}
	t.kmu.Lock()
	defer t.kmu.Unlock()
	if k, ok := t.keys[principal]; ok {
		return k, nil
	}
	k, err := ident.LoadPrivateKey(t.Path(cr.KeyFile))
	if err != nil {
		return nil, fmt.Errorf("principal %s: %w", principal, err)
	}
	if t.keys == nil {
		t.keys = map[string]ed25519.PrivateKey{}
	}
	t.keys[principal] = k
	return k, nil
}

// NewTarget returns the Target of h from inv. The key file is read on first use.
func NewTarget(inv *inventory.Inventory, h inventory.Host, now func() time.Time) *Target {
	if now == nil {
		now = time.Now
	}
	return &Target{Host: h, Inv: inv, now: now}
}

// VMSAddrs returns this VMS's own addresses on the two paths to the host,
// as the paper's vms_message carries them: the inventory's vms.oob_i and
// vms.vmm_i where set, else the source address the kernel gives the VMS's
// packets to the host's bmc.addr and vmmi.addr (the local address of its
// RMCP+ socket and of its VMM-I connection, without their per-connection
// ports). Empty when the path has no route or no address.
func (t *Target) VMSAddrs() (oob, vmm string) {
	oob, vmm = t.Inv.VMS.OOBI, t.Inv.VMS.VMMI
	if oob == "" {
		oob = sourceAddr(t.Host.BMC.Addr)
	}
	if vmm == "" {
		vmm = sourceAddr(t.Host.VMMI.Addr)
	}
	return oob, vmm
}

// sourceAddr is the local IP address the kernel picks for packets to
// remote (host:port): a UDP socket connected there, which sends nothing.
// "" when remote is empty, unresolvable or unroutable.
func sourceAddr(remote string) string {
	if remote == "" {
		return ""
	}
	c, err := net.Dial("udp", remote)
	if err != nil {
		return ""
	}
	defer c.Close()
	if a, ok := c.LocalAddr().(*net.UDPAddr); ok {
		return a.IP.String()
	}
	return ""
}

// Name is the inventory name of the host.
func (t *Target) Name() string { return t.Host.Name }

// Now is the target's clock.
func (t *Target) Now() time.Time { return t.now() }

func (t *Target) load() error {
	t.once.Do(func() {
		if t.Host.SecretFile == "" {
			t.err = fmt.Errorf("host %s: no secret_file in the inventory (run vmsctl enroll %s)", t.Host.Name, t.Host.Name)
			return
		}
		path := t.Path(t.Host.SecretFile)
		b, err := fileio.ReadSecret(path)
		if err != nil {
			t.err = fmt.Errorf("host %s key: %w", t.Host.Name, err)
			return
		}
		// Two keys during a host key rotation: the first seals, both open.
		ring, err := seal.ParseKeyRing(string(b))
		if err != nil {
			t.err = fmt.Errorf("host %s key %s: %w", t.Host.Name, path, err)
			return
		}
		k := ring[0]
		if k.HostID() != t.Host.HostID {
			t.err = fmt.Errorf("host %s key %s is for host id %q, inventory says %q", t.Host.Name, path, k.HostID(), t.Host.HostID)
			return
		}
		t.key, t.sl, t.op = k, seal.NewSealer(k), seal.NewOpener(k, seal.OpenerOptions{Also: ring[1:]})
	})
	return t.err
}

// Path resolves a file named in the inventory.
func (t *Target) Path(p string) string {
	if t.Inv == nil {
		return p
	}
	return t.Inv.Path(p)
}

// Seal encodes and seals m under a fresh random message id. A request is
// first signed for this host with its principal's key (internal/ident); the
// caller's request is not changed.
func (t *Target) Seal(m vmsg.Message) (msgID uint64, env []byte, err error) {
	if err := t.load(); err != nil {
		return 0, nil, err
	}
	if r, ok := m.(*vmsg.Request); ok {
		k, err := t.signer(r.Principal)
		if err != nil {
			return 0, nil, err
		}
		if k != nil {
			c := *r
			if err := ident.SignRequest(k, t.Host.HostID, &c); err != nil {
				return 0, nil, err
			}
			m = &c
		}
	}
	kind, body, err := vmsg.Encode(m)
	if err != nil {
		return 0, nil, err
	}
	msgID = NewID()
	env, err = t.sl.Seal(kind, msgID, body, t.now())
	return msgID, env, err
}

// Open authenticates an envelope from the host and decodes its body.
func (t *Target) Open(env []byte) (vmsg.Message, error) {
	if err := t.load(); err != nil {
		return nil, err
	}
	hdr, body, err := t.op.Open(env, t.now())
	if err != nil {
		return nil, err
	}
	return vmsg.Decode(hdr.Kind, body)
}

// requestIDOf returns the request id an answer refers to (0 for alerts).
func requestIDOf(m vmsg.Message) uint64 {
	switch m := m.(type) {
	case *vmsg.Reply:
		return m.RequestID
	case *vmsg.Challenge:
		return m.RequestID
	}
	return 0
}

// NewID returns a random non-zero 64-bit id.
func NewID() uint64 {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			panic(err) // crypto/rand never fails on Linux
		}
		if id := binary.LittleEndian.Uint64(b[:]); id != 0 {
			return id
		}
	}
}

// ChallengeFunc answers a challenge: it returns the registered user's code
// bound to ch.Nonce (see seal.ChallengeCode).
type ChallengeFunc func(ctx context.Context, host string, ch *vmsg.Challenge) (code string, err error)

// Options configure a Client. Zero values take defaults.
type Options struct {
	// Via selects the channel: ViaAuto (default), ViaVMMI or ViaOOB.
	Via string
	// Principal overrides the inventory's principal.
	Principal string
	// Challenge answers challenges; nil fails every challenged request.
	Challenge ChallengeFunc
	// VMMI, OOB replace the real channels (tests, other transports).
	VMMI, OOB Channel
	// Auto tunes the auto channel.
	Auto AutoOptions
	// OOBOptions tune the real OOB-I channel.
	OOBOptions OOBOptions
	// Metadata goes with every request (the vms_message's metadata; the
	// agent logs, journals and returns it). A request's own entries win.
	Metadata map[string]string
	// Now is the clock (default time.Now).
	Now    func() time.Time
	Logger *slog.Logger
}

// Client sends commands to the hosts of an inventory.
type Client struct {
	inv       *inventory.Inventory
	principal string
	challenge ChallengeFunc
	now       func() time.Time
	log       *slog.Logger

	vmmi, oob Channel
	auto      *Auto
	ch        Channel
	oobOpt    OOBOptions // its Transport picks the path of host power/sel too

	mu      sync.Mutex
	targets map[string]*Target
	meta    map[string]string
}

// New returns a Client over inv.
func New(inv *inventory.Inventory, o Options) (*Client, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{inv: inv, principal: inv.Principal, challenge: o.Challenge, now: o.Now,
		log: o.Logger, targets: map[string]*Target{}, meta: o.Metadata, oobOpt: o.OOBOptions}
	if o.Principal != "" {
		c.principal = o.Principal
	}
	c.vmmi, c.oob = o.VMMI, o.OOB
	if c.vmmi == nil {
		c.vmmi = NewVMMI(o.Logger)
	}
	if c.oob == nil {
		c.oob = NewOOB(o.OOBOptions, o.Logger)
	}
	switch o.Via {
	case "", ViaAuto:
		c.auto = NewAuto(c.vmmi, c.oob, o.Auto, o.Logger)
		c.ch = c.auto
	case ViaVMMI, "vmmi":
		c.ch = c.vmmi
	case ViaOOB, "oob":
		c.ch = c.oob
	default:
		return nil, fmt.Errorf("unknown channel %q: want auto, vmmi or oob", o.Via)
	}
	return c, nil
}

// Inventory is the client's inventory.
func (c *Client) Inventory() *inventory.Inventory { return c.inv }

// Channel is the channel commands go through.
func (c *Client) Channel() Channel { return c.ch }

// Health reports the VMM-I health of host as the auto channel sees it
// (zero value when the client does not run in auto mode).
func (c *Client) Health(host string) Health {
	if c.auto == nil {
		return Health{}
	}
	return c.auto.Health(host)
}

// Target returns the Target of a host name.
func (c *Client) Target(host string) (*Target, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.targets[host]; ok {
		return t, nil
	}
	h, err := c.inv.Host(host)
	if err != nil {
		return nil, err
	}
	inv := c.inv
	if c.principal != inv.Principal {
		// Everything that speaks for this client on the host — its
		// requests, the auto channel's health pings, the VMM-I client
		// certificate — names the client's principal.
		cp := *inv
		cp.Principal = c.principal
		inv = &cp
	}
	t := NewTarget(inv, *h, c.now)
	c.targets[host] = t
	return t, nil
}

// Result is the outcome of one command.
type Result struct {
	Host      string      `json:"host"`
	RequestID uint64      `json:"request_id"`
	Reply     *vmsg.Reply `json:"reply"`
	// Via is the channel that carried the final answer.
	Via string `json:"via"`
	// ExecutedVia is the channel that carried the request the agent ran,
	// where known; SentVia every channel it was handed to when more than
	// one (a failover: the agent runs one request id once).
	ExecutedVia string        `json:"executed_via,omitempty"`
	SentVia     []string      `json:"sent_via,omitempty"`
	Latency     time.Duration `json:"latency"`
	// Challenged is true when a challenge was answered on the way.
	Challenged bool `json:"challenged,omitempty"`
	// ClockOffset is the host's clock minus this VMS's, measured from the
	// reply (to within half the round trip); nil when it carried no time.
	ClockOffset *time.Duration `json:"clock_offset,omitempty"`
}

// Do runs cmd on vm (empty for list and ping) of host and returns the
// agent's successful Reply. A refusal is a *ReplyError.
func (c *Client) Do(ctx context.Context, host string, cmd vmsg.Command, vm string) (*Result, error) {
	return c.Send(ctx, host, &vmsg.Request{ID: NewID(), Command: cmd, VM: vm})
}

// Send is Do with a caller-built request (its ID is kept; zero gets a new
// one). Principal and issue time are filled in, and, where the request has
// none, the VMS's own OOB-I and VMM-I addresses (Target.VMSAddrs) and the
// client's metadata.
func (c *Client) Send(ctx context.Context, host string, req *vmsg.Request) (*Result, error) {
	t, err := c.Target(host)
	if err != nil {
		return nil, err
	}
	r := *req
	if r.ID == 0 {
		r.ID = NewID()
	}
	if r.Principal == "" {
		r.Principal = c.principal
	}
	if r.OOBAddr == "" || r.VMMAddr == "" {
		oob, vmm := t.VMSAddrs()
		if r.OOBAddr == "" {
			r.OOBAddr = oob
		}
		if r.VMMAddr == "" {
			r.VMMAddr = vmm
		}
	}
	if len(c.meta) > 0 {
		m := make(map[string]string, len(c.meta)+len(r.Metadata))
		for k, v := range c.meta {
			m[k] = v
		}
		for k, v := range r.Metadata {
			m[k] = v
		}
		r.Metadata = m
	}
	res := &Result{Host: host, RequestID: r.ID}
	rep, err := c.send(ctx, t, &r, res)
	if err != nil {
		return res, &RequestError{Host: host, RequestID: r.ID, Err: err}
	}
	res.Reply = rep
	return res, nil
}

// send runs the exchanges of one request: the challenge round and the
// re-asks of a request still running on the host.
func (c *Client) send(ctx context.Context, t *Target, r *vmsg.Request, res *Result) (*vmsg.Reply, error) {
	host := t.Name()
	start := c.now()
	busyWait := 200 * time.Millisecond
	for round := 0; ; round++ {
		sent := c.now()
		r.IssuedMs = sent.UnixMilli()
		ans, err := c.ch.Exchange(ctx, t, r)
		if err != nil {
			return nil, classify(err)
		}
		res.Via, res.Latency = ans.Via, ans.Latency
		res.ExecutedVia, res.SentVia = ans.Executed, ans.Sent
		if res.ExecutedVia == "" && len(ans.Sent) == 0 {
			res.ExecutedVia = ans.Via // one channel: it carried everything
		}
		ch, rep := asChallenge(ans.Msg)
		if ch == nil {
			if rep == nil {
				return nil, fmt.Errorf("unexpected %T answer", ans.Msg)
			}
			res.Reply = rep
			res.ClockOffset = clockOffset(rep.Host, sent, c.now())
			if rep.Executed != nil && rep.Executed.Via != "" {
				res.ExecutedVia = rep.Executed.Via // the agent says which channel ran it
			}
			if rep.Code == vmsg.ErrInProgress {
				// Another copy of this request id (sent on the other
				// channel, or an earlier attempt) is still running: ask
				// again, same id, for its outcome.
				c.log.Debug("request still running on the host; asking again", "host", host, "request", r.ID, "via", ans.Via, "in", busyWait)
				if err := sleep(ctx, busyWait); err != nil {
					return rep, &OutcomeUnknownError{InProgress: true, Err: err}
				}
				busyWait = min(2*busyWait, 2*time.Second)
				continue
			}
			if !rep.OK {
				text := rep.Error
				if rep.Code == vmsg.ErrClockSkew {
					text = clockSkewText(res.ClockOffset, text)
				}
				return rep, &ReplyError{Code: rep.Code, Text: text, Via: ans.Via, Latency: ans.Latency}
			}
			c.log.Debug("answer", "host", host, "request", r.ID, "via", ans.Via, "latency", ans.Latency, "total", c.now().Sub(start))
			return rep, nil
		}
		if round > 0 {
			return nil, fmt.Errorf("%w: agent challenged the answered request again", ErrChallengeFailed)
		}
		if c.challenge == nil {
			return nil, fmt.Errorf("%w: %s %s is protected and no TOTP code source was given", ErrChallengeFailed, ch.Command, ch.VM)
		}
		code, err := c.challenge(ctx, host, ch)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrChallengeFailed, err)
		}
		res.Challenged = true
		r.Answer = &vmsg.ChallengeAnswer{Nonce: ch.Nonce, Code: code}
	}
}

// classify turns a channel's failure into what it tells about the
// request: refused credentials (ErrUnauthorized) or not delivered anywhere
// (ErrUnreachable) as they are; anything else left the request with the
// host, or may have: outcome unknown.
func classify(err error) error {
	switch {
	case errors.Is(err, ErrNoAnswer):
		return &OutcomeUnknownError{Err: err}
	case errors.Is(err, ErrUnauthorized), errors.Is(err, ErrUnreachable):
		return err
	case errors.Is(err, ErrNotDelivered):
		return fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	return &OutcomeUnknownError{Err: fmt.Errorf("may have been delivered: %w", err)}
}

// asChallenge splits an answer into a challenge (kind 3, or a Reply carrying
// ErrChallenge) or a plain reply.
func asChallenge(m vmsg.Message) (*vmsg.Challenge, *vmsg.Reply) {
	switch m := m.(type) {
	case *vmsg.Challenge:
		return m, nil
	case *vmsg.Reply:
		if m.Code == vmsg.ErrChallenge && m.Challenge != nil {
			return m.Challenge, nil
		}
		return nil, m
	}
	return nil, nil
}

// Alerts returns the alerts received from host since the last call, from
// every channel.
func (c *Client) Alerts(ctx context.Context, host string) ([]*vmsg.Alert, error) {
	t, err := c.Target(host)
	if err != nil {
		return nil, err
	}
	var all []*vmsg.Alert
	var errs []error
	for _, ch := range []Channel{c.vmmi, c.oob} {
		if c.ch != c.auto && ch != c.ch {
			continue
		}
		a, err := ch.Alerts(ctx, t)
		all = append(all, a...)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ch.Name(), err))
		}
	}
	if len(all) > 0 {
		return all, nil
	}
	return nil, errors.Join(errs...)
}

// Close closes every channel.
func (c *Client) Close() error {
	var errs []error
	if c.auto != nil {
		errs = append(errs, c.auto.Close())
	}
	errs = append(errs, c.vmmi.Close(), c.oob.Close())
	return errors.Join(errs...)
}

// alertBuffer keeps the last alerts of each host.
type alertBuffer struct {
	mu sync.Mutex
	m  map[string][]*vmsg.Alert
}

const maxAlerts = 256

func (b *alertBuffer) add(host string, a *vmsg.Alert) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = map[string][]*vmsg.Alert{}
	}
	l := append(b.m[host], a)
	if len(l) > maxAlerts {
		l = l[len(l)-maxAlerts:]
	}
	b.m[host] = l
}

func (b *alertBuffer) take(host string) []*vmsg.Alert {
	b.mu.Lock()
	defer b.mu.Unlock()
	l := b.m[host]
	delete(b.m, host)
	return l
}
