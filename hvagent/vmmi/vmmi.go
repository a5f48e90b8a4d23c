// Package vmmi is hvagent's VMM-I channel: a TLS 1.3 server on the host's
// management network. Each connection carries frames (internal/frame: u32
// big-endian length, then a sealed envelope) in both directions: the VMS
// writes a sealed request, the server answers with the frames the agent
// returns for it (a Reply or a Challenge, possibly followed by an Alert),
// back to back. Requests on one connection run concurrently (up to
// MaxInFlight), so answers to different requests may come in any order: the
// VMS matches them by request id. A request the agent does not answer (an
// envelope it cannot open) gets no frame; the connection stays up.
//
// Mutual TLS: the host presents its own certificate (it names this host
// only); the VMS presents a client certificate issued by ClientCAs whose
// subject common name is a principal. The handshake fails for a missing
// certificate, one from another CA, or one naming a principal the
// authorization list does not know (KnownPrincipal). Each request on the
// connection must then claim that same principal (agent.WithPeer) and carry
// that principal's signature (internal/ident), exactly as on the OOB-I,
// since both channels share Agent.HandleEnvelope.
//
// Limits, so idle or slow peers cannot hold every slot (slots.go): a
// connection is pending until its TLS handshake is done with a valid client
// certificate, and then authenticated. At most MaxPending connections are
// pending (MaxPendingPerSource from one source address), each for at most
// HandshakeTimeout; a source over its caps makes room by closing its own
// oldest pending connection, and when all MaxPending are taken the oldest
// pending connection of the source holding the most is closed. At most MaxConns
// are authenticated, each closed after IdleTimeout without a frame, and a
// write deadline per answer. Every connection counts against
// MaxConnsPerSource.
//
// Shutdown (ctx ends, SIGTERM): the listener closes and no connection
// reads another request, but the requests already read are answered on
// their connection (for at most DrainTimeout) before it closes, so a VMS
// gets its answer now, not over the OOB-I a retry later. Serve returns
// once every connection is closed.
package vmmi

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ooblab/ooblab/hvagent/agent"
	"github.com/ooblab/ooblab/internal/frame"
)

// Handler serves one envelope (agent.Agent implements it).
type Handler interface {
	HandleEnvelope(ctx context.Context, env []byte, via string) ([][]byte, error)
}

var _ Handler = (*agent.Agent)(nil)

// Config configures a Server. Handler and TLS are required.
type Config struct {
	Handler Handler
	// TLS is the server configuration (see LoadTLS); its MinVersion is
	// raised to TLS 1.3.
	TLS *tls.Config
	// ClientCAs issue the VMS principals' client certificates (see
	// LoadClientCAs). Required.
	ClientCAs *x509.CertPool
	// KnownPrincipal, when set, must accept the client certificate's
	// common name (agent.Agent.KnownPrincipal: the authorization list).
	KnownPrincipal    func(principal string) bool
	MaxConns          int // authenticated connections, default 64
	MaxConnsPerSource int // per remote IP address, pending or not, default 16
	// MaxPending bounds the connections not yet past the TLS handshake
	// with a valid client certificate (default 32), MaxPendingPerSource
	// those from one remote IP address (default 4).
	MaxPending, MaxPendingPerSource int
	MaxInFlight                     int           // concurrent requests per connection, default 16
	HandshakeTimeout                time.Duration // TCP accept to the end of the TLS handshake, default 3 s
	IdleTimeout                     time.Duration // between frames, default 2 min
	WriteTimeout                    time.Duration // per answer frame, default 30 s
	DrainTimeout                    time.Duration // shutdown: answers to requests already read, default 30 s
	Logger                          *slog.Logger
}

// Server is the VMM-I listener.
type Server struct {
	cfg    Config
	log    *slog.Logger
	tls    *tls.Config
	slots  *slots
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
	served atomic.Uint64
	refuse atomic.Uint64
	evict  atomic.Uint64
}

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Handler == nil {
		return nil, errors.New("vmmi: no handler")
	}
	if cfg.TLS == nil || (len(cfg.TLS.Certificates) == 0 && cfg.TLS.GetCertificate == nil) {
		return nil, errors.New("vmmi: no TLS certificate")
	}
	if cfg.ClientCAs == nil {
		return nil, errors.New("vmmi: no client CA: the VMS must authenticate with a client certificate")
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 64
	}
	if cfg.MaxConnsPerSource <= 0 {
		cfg.MaxConnsPerSource = 16
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 32
	}
	if cfg.MaxPendingPerSource <= 0 {
		cfg.MaxPendingPerSource = 4
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 16
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 3 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 2 * time.Minute
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	t := cfg.TLS.Clone()
	t.MinVersion = tls.VersionTLS13
	t.ClientAuth = tls.RequireAndVerifyClientCert
	t.ClientCAs = cfg.ClientCAs
	known := cfg.KnownPrincipal
	t.VerifyConnection = func(cs tls.ConnectionState) error {
		p, err := peerPrincipal(cs)
		if err != nil {
			return err
		}
		if known != nil && !known(p) {
			return fmt.Errorf("vmmi: client certificate names principal %q, which the authorization list does not know", p)
		}
		return nil
	}
	return &Server{cfg: cfg, log: cfg.Logger, tls: t, conns: map[net.Conn]struct{}{},
		slots: newSlots(cfg.MaxPending, cfg.MaxPendingPerSource, cfg.MaxConns, cfg.MaxConnsPerSource)}, nil
}

// peerPrincipal is the principal a verified client certificate names: its
// subject common name.
func peerPrincipal(cs tls.ConnectionState) (string, error) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", errors.New("vmmi: no verified client certificate")
	}
	cn := cs.VerifiedChains[0][0].Subject.CommonName
	if cn == "" {
		return "", errors.New("vmmi: client certificate has no common name (the principal)")
	}
	return cn, nil
}

// LoadClientCAs reads the PEM certificates that issue client certificates.
func LoadClientCAs(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("vmmi: client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("vmmi: client CA %s: no PEM certificate", file)
	}
	return pool, nil
}

// Served is the number of frames answered so far.
func (s *Server) Served() uint64 { return s.served.Load() }

// Refused is the number of connections closed for want of a slot: too
// many from their source, too many pending, or MaxConns authenticated.
func (s *Server) Refused() uint64 { return s.refuse.Load() }

// Evicted is the number of pending connections closed to make room for a
// newcomer: a newer one from their source, or one from a source holding
// fewer.
func (s *Server) Evicted() uint64 { return s.evict.Load() }

// Conns reports the connections open now: pending (not yet authenticated)
// and authenticated.
func (s *Server) Conns() (pending, authenticated int) { return s.slots.counts() }

// Serve accepts TLS connections on ln (a plain TCP listener) until ctx
// ends, then closes ln, lets every connection answer the requests it has
// read (at most DrainTimeout), closes it, and returns nil.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Requests run under hctx: it outlives ctx by DrainTimeout.
	hctx, hcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hcancel()
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.SetReadDeadline(time.Now()) // read no more; serveConn answers what it has, then closes
		}
		s.mu.Unlock()
		time.AfterFunc(s.cfg.DrainTimeout, hcancel)
	})
	defer stop()
	defer s.wg.Wait()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscallEMFILE) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("VMM-I accept failed; retrying", "err", err, "retry_in", delay)
				select {
				case <-time.After(delay):
				case <-ctx.Done():
					return nil
				}
				continue
			}
			return fmt.Errorf("vmmi: accept: %w", err)
		}
		delay = 0
		sl, evicted, why := s.slots.admit(nc, sourceOf(nc))
		if evicted != nil {
			s.evict.Add(1)
			s.log.Debug("VMM-I pending connection closed to make room for a newcomer", "peer", evicted.RemoteAddr().String(), "for", nc.RemoteAddr().String())
			evicted.Close()
		}
		if why != admitted {
			s.refuse.Add(1)
			s.log.Warn("VMM-I connection refused: "+why.String(), "peer", nc.RemoteAddr().String(),
				"max_per_source", s.cfg.MaxConnsPerSource, "max_pending", s.cfg.MaxPending, "max_pending_per_source", s.cfg.MaxPendingPerSource)
			nc.Close()
			continue
		}
		s.track(nc, true)
		s.wg.Go(func() {
			// Slot first, close last: a peer that sees the close can
			// reconnect at once.
			defer nc.Close()
			defer s.slots.release(sl)
			defer s.track(nc, false)
			s.serveConn(ctx, hctx, nc, sl)
		})
	}
}

func sourceOf(c net.Conn) string {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	h, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return c.RemoteAddr().String()
	}
	return h
}

func (w admitResult) String() string {
	switch w {
	case refusedSource:
		return "too many open from this source, all authenticated"
	case refusedPending:
		return "too many connections still in their TLS handshake"
	}
	return "admitted"
}

func (s *Server) track(c net.Conn, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
}

// serveConn serves one connection (in slot sl) until ctx ends or the peer
// goes; its requests run under hctx, so those already read are answered
// after ctx ends.
func (s *Server) serveConn(ctx, hctx context.Context, nc net.Conn, sl *slot) {
	peer := nc.RemoteAddr().String()
	log := s.log.With("peer", peer)
	tc := tls.Server(nc, s.tls)
	// A deadline, not a context timeout: HandshakeContext closes the
	// connection itself when its context ends, before the slot is free.
	nc.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	err := tc.HandshakeContext(ctx)
	nc.SetDeadline(time.Time{})
	if err != nil {
		log.Warn("VMM-I TLS handshake failed (no, unknown or expired client certificate, a slow peer, or closed to make room)", "err", err)
		return
	}
	if ok, evicted := s.slots.promote(sl); evicted {
		log.Debug("VMM-I connection closed to make room for a newcomer before it authenticated")
		return
	} else if !ok {
		s.refuse.Add(1)
		log.Warn("VMM-I connection refused after its handshake: too many authenticated connections open", "max", s.cfg.MaxConns)
		return
	}
	principal, err := peerPrincipal(tc.ConnectionState())
	if err != nil { // VerifyConnection passed, so this does not happen
		log.Error("VMM-I connection without a principal; closed", "err", err)
		return
	}
	log = log.With("cert_principal", principal)
	log.Debug("VMM-I connection up", "tls", tls.VersionName(tc.ConnectionState().Version))
	hctx = agent.WithPeer(hctx, principal)
	var (
		wmu      sync.Mutex // one answer's frames at a time
		inflight sync.WaitGroup
		busy     atomic.Int32
		slots    = make(chan struct{}, s.cfg.MaxInFlight)
	)
	defer inflight.Wait()
	for {
		tc.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		if ctx.Err() != nil { // stopping: Serve's deadline may predate ours
			return
		}
		env, err := frame.Read(tc)
		if err != nil {
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout() && busy.Load() > 0:
				// Idle, but answers are still due: they are written (the
				// deferred Wait) before the connection closes. A timed-out
				// read may have consumed part of a frame, so reading on
				// is not safe.
				log.Debug("VMM-I connection idle; closing after the answers still due")
			case errors.Is(err, io.EOF), ctx.Err() != nil:
			case errors.Is(err, frame.ErrTooLarge):
				log.Warn("VMM-I frame out of range; closing the connection", "err", err)
			default:
				log.Info("VMM-I connection closed", "err", err)
			}
			return
		}
		// Requests on one connection run concurrently (vmsctl shares one
		// connection per host and matches answers by request id), at most
		// MaxInFlight at a time; a slow VM action does not hold up a ping.
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		busy.Add(1)
		inflight.Go(func() {
			defer func() { busy.Add(-1); <-slots }()
			out, err := s.cfg.Handler.HandleEnvelope(hctx, env, agent.ViaVMMI)
			if err != nil {
				log.Debug("VMM-I envelope not answered", "len", len(env), "err", err)
			}
			wmu.Lock()
			defer wmu.Unlock()
			for _, a := range out {
				tc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
				if err := frame.Write(tc, a); err != nil {
					log.Warn("VMM-I answer not delivered; the VMS can retry with the same request id", "err", err)
					tc.Close()
					return
				}
				s.served.Add(1)
			}
		})
	}
}
