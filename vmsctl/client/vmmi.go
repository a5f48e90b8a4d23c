package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ooblab/ooblab/internal/fileio"
	"github.com/ooblab/ooblab/internal/frame"
	"github.com/ooblab/ooblab/internal/vmsg"
)

// VMMI is the channel over hvagent's TLS API on the host's management
// network: mutual TLS 1.3 — the host's CA file from the inventory as the only
// root and the host's own name (vmmi.server_name) as the one name its
// certificate must carry; the principal's client certificate from the
// inventory's credentials. One connection per host is kept open and shared
// by concurrent requests. Each
// request is one frame (package frame) holding a sealed envelope; the agent
// answers with frames holding sealed Replies and Challenges, and may push
// Alerts on the same stream at any time.
//
// A request whose answer does not arrive within its ctx closes the
// connection (a link that swallows packets leaves TCP open for minutes), so
// the next request dials afresh.
type VMMI struct {
	log    *slog.Logger
	mu     sync.Mutex
	conns  map[string]*vmmiConn
	dialMu map[string]chan struct{} // one dial at a time per host (a 1-slot semaphore, so waiting honours ctx)
	alerts alertBuffer
	// Dial, when set, replaces net.Dialer (tests).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

var _ Channel = (*VMMI)(nil)

// NewVMMI returns a VMM-I channel.
func NewVMMI(log *slog.Logger) *VMMI {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &VMMI{log: log, conns: map[string]*vmmiConn{}, dialMu: map[string]chan struct{}{}}
}

// Name is ViaVMMI.
func (v *VMMI) Name() string { return ViaVMMI }

type vmmiConn struct {
	v    *VMMI
	t    *Target
	c    *tls.Conn
	wmu  sync.Mutex
	mu   sync.Mutex
	wait map[uint64]chan vmsg.Message
	err  error // set once the reader stopped
	done chan struct{}
	// frames counts the frames read: a request that times out closes the
	// connection only if nothing came on it since the request was sent, a
	// sign the agent no longer answers there.
	frames atomic.Uint64
}

func (v *VMMI) tlsConfig(t *Target) (*tls.Config, error) {
	h := t.Host.VMMI
	if h.CAFile == "" {
		return nil, fmt.Errorf("host %s: no vmmi.ca_file in the inventory", t.Name())
	}
	pem, err := os.ReadFile(t.Path(h.CAFile))
	if err != nil {
		return nil, fmt.Errorf("host %s CA: %w", t.Name(), err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("host %s CA %s: no PEM certificate", t.Name(), h.CAFile)
	}
	sn := h.ServerName
	if sn == "" {
		sn, _, _ = net.SplitHostPort(h.Addr)
	}
	cfg := &tls.Config{RootCAs: pool, ServerName: sn, MinVersion: tls.VersionTLS13}
	cert, err := clientCert(t)
	if err != nil {
		return nil, err
	}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg, nil
}

// clientCert is the client certificate of t's principal from the
// inventory's credentials (nil when it has none: hvagent then refuses the
// handshake with "certificate required").
func clientCert(t *Target) (*tls.Certificate, error) {
	p := t.PrincipalName()
	if t.Inv == nil {
		return nil, nil
	}
	cr, ok := t.Inv.Credential(p)
	if !ok || cr.CertFile == "" {
		return nil, nil
	}
	certPEM, err := os.ReadFile(t.Path(cr.CertFile))
	if err != nil {
		return nil, fmt.Errorf("principal %s client certificate: %w", p, err)
	}
	keyPEM, err := fileio.ReadSecret(t.Path(cr.KeyFile))
	if err != nil {
		return nil, fmt.Errorf("principal %s key: %w", p, err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("principal %s client certificate %s: %w", p, cr.CertFile, err)
	}
	return &c, nil
}

func (v *VMMI) conn(ctx context.Context, t *Target) (*vmmiConn, error) {
	v.mu.Lock()
	if c, ok := v.conns[t.Name()]; ok {
		v.mu.Unlock()
		return c, nil
	}
	dm, ok := v.dialMu[t.Name()]
	if !ok {
		dm = make(chan struct{}, 1)
		v.dialMu[t.Name()] = dm
	}
	v.mu.Unlock()
	// Wait for another dial to this host within ctx: auto mode's ping must
	// give up within its budget while the request's own dial (with the
	// caller's whole deadline) hangs on a cut link, so the OOB-I gets the
	// request in time.
	select {
	case dm <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("vmm-i: waiting for another dial to %s: %w", t.Name(), ctx.Err())
	}
	defer func() { <-dm }()
	v.mu.Lock()
	if c, ok := v.conns[t.Name()]; ok { // dialed while we waited
		v.mu.Unlock()
		return c, nil
	}
	v.mu.Unlock()
	if t.Host.VMMI.Addr == "" {
		return nil, fmt.Errorf("host %s: no vmmi.addr in the inventory", t.Name())
	}
	cfg, err := v.tlsConfig(t)
	if err != nil {
		return nil, err
	}
	dial := v.Dial
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	raw, err := dial(ctx, "tcp", t.Host.VMMI.Addr)
	if err != nil {
		return nil, fmt.Errorf("vmm-i dial %s: %w", t.Host.VMMI.Addr, err)
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("vmm-i TLS handshake with %s: %w", t.Host.VMMI.Addr, err)
	}
	c := &vmmiConn{v: v, t: t, c: tc, wait: map[uint64]chan vmsg.Message{}, done: make(chan struct{})}
	v.mu.Lock()
	v.conns[t.Name()] = c
	v.mu.Unlock()
	go c.read()
	return c, nil
}

func (c *vmmiConn) read() {
	defer close(c.done)
	for {
		env, err := frame.Read(c.c)
		if err != nil {
			c.fail(err)
			return
		}
		c.frames.Add(1)
		m, err := c.t.Open(env)
		if err != nil {
			c.v.log.Warn("vmm-i: dropped an answer that does not open", "host", c.t.Name(), "err", err)
			continue
		}
		if a, ok := m.(*vmsg.Alert); ok {
			c.v.alerts.add(c.t.Name(), a)
			continue
		}
		id := requestIDOf(m)
		c.mu.Lock()
		ch := c.wait[id]
		delete(c.wait, id)
		c.mu.Unlock()
		if ch == nil {
			c.v.log.Debug("vmm-i: answer for no waiting request (late or duplicate)", "host", c.t.Name(), "request", id)
			continue
		}
		ch <- m
	}
}

// fail closes the connection and forgets it.
func (c *vmmiConn) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
	c.c.Close()
	c.v.mu.Lock()
	if c.v.conns[c.t.Name()] == c {
		delete(c.v.conns, c.t.Name())
	}
	c.v.mu.Unlock()
}

// Exchange implements Channel.
func (v *VMMI) Exchange(ctx context.Context, t *Target, req *vmsg.Request) (*Answer, error) {
	start := time.Now()
	c, err := v.conn(ctx, t)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotDelivered, err)
	}
	_, env, err := t.Seal(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotDelivered, err)
	}
	ch := make(chan vmsg.Message, 1)
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: vmm-i %s: %w", ErrNotDelivered, t.Name(), c.err)
	}
	c.wait[req.ID] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.wait, req.ID)
		c.mu.Unlock()
	}()

	seen := c.frames.Load()
	c.wmu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		c.c.SetWriteDeadline(dl)
	} else {
		c.c.SetWriteDeadline(time.Time{})
	}
	err = frame.Write(c.c, env)
	c.wmu.Unlock()
	if err != nil {
		// A frame not written in full is never a request the agent reads
		// (it reads whole frames; the connection closes now).
		c.fail(err)
		return nil, fmt.Errorf("%w: vmm-i send to %s: %w", ErrNotDelivered, t.Name(), err)
	}
	// Delivered: the whole frame is on the established TLS connection.
	select {
	case m := <-ch:
		return &Answer{Msg: m, Via: ViaVMMI, Latency: time.Since(start)}, nil
	case <-c.done:
		return nil, fmt.Errorf("%w: vmm-i %s: connection lost: %w", ErrNoAnswer, t.Name(), c.err)
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) && c.frames.Load() == seen {
			// Timed out and silent since the request went: the next
			// request dials afresh. A request cancelled (the auto channel
			// cancels the ping beside a request answered first), or a
			// connection that answered meanwhile, is no sign of a dead
			// connection, and other requests may be waiting on it.
			c.fail(ctx.Err())
		}
		return nil, fmt.Errorf("%w: vmm-i %s: %w", ErrNoAnswer, t.Name(), ctx.Err())
	}
}

// Alerts returns the alerts pushed on the host's stream since the last call.
// It does not dial: alerts arrive only while a connection is open.
func (v *VMMI) Alerts(ctx context.Context, t *Target) ([]*vmsg.Alert, error) {
	return v.alerts.take(t.Name()), nil
}

// Close closes every connection.
func (v *VMMI) Close() error {
	v.mu.Lock()
	cs := make([]*vmmiConn, 0, len(v.conns))
	for _, c := range v.conns {
		cs = append(cs, c)
	}
	v.mu.Unlock()
	for _, c := range cs {
		c.fail(errors.New("closed"))
		<-c.done
	}
	return nil
}
