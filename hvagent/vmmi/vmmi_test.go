package vmmi

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ooblab/ooblab/hvagent/agent"
	"github.com/ooblab/ooblab/hvagent/agenttest"
	"github.com/ooblab/ooblab/hvagent/journal"
	"github.com/ooblab/ooblab/internal/frame"
	"github.com/ooblab/ooblab/internal/seal"
	"github.com/ooblab/ooblab/internal/testutil"
	"github.com/ooblab/ooblab/internal/vmsg"
)

type srvBench struct {
	addr   string
	files  CertFiles
	pool   *x509.CertPool
	srv    *Server
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, h Handler, mod func(*Config)) *srvBench {
	t.Helper()
	dir := t.TempDir()
	files, err := GenerateCert(dir, []string{"localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{files.Key, files.CAKey} {
		if fi, _ := os.Stat(k); fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s mode %v", k, fi.Mode().Perm())
		}
	}
	tc, err := LoadTLS(files.Cert, files.Key)
	if err != nil {
		t.Fatal(err)
	}
	cas, err := LoadClientCAs(files.CA)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Handler: h, TLS: tc, ClientCAs: cas, Logger: testutil.Logger(t)}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &srvBench{addr: ln.Addr().String(), files: files, srv: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { b.done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() { b.stop(t) })
	pem, _ := os.ReadFile(files.CA)
	b.pool = x509.NewCertPool()
	b.pool.AppendCertsFromPEM(pem)
	return b
}

func (b *srvBench) stop(t *testing.T) {
	b.cancel()
	select {
	case err := <-b.done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
		b.done <- nil
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
}

// clientCert is principal's client certificate from the bench's CA, for
// its agenttest key.
func (b *srvBench) clientCert(t *testing.T, principal string) tls.Certificate {
	t.Helper()
	return issueFor(t, b.files, principal)
}

func issueFor(t *testing.T, files CertFiles, principal string) tls.Certificate {
	t.Helper()
	k := agenttest.Key(principal)
	pemCert, err := IssueClientCert(files, principal, k.Public())
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(pemCert)
	return tls.Certificate{Certificate: [][]byte{blk.Bytes}, PrivateKey: k}
}

// tlsConfig is a client configuration for name presenting vms1's certificate.
func (b *srvBench) tlsConfig(t *testing.T, name string) *tls.Config {
	return &tls.Config{RootCAs: b.pool, ServerName: name, MinVersion: tls.VersionTLS13,
		Certificates: []tls.Certificate{b.clientCert(t, "vms1")}}
}

func (b *srvBench) dial(t *testing.T, name string) *tls.Conn {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", b.addr, b.tlsConfig(t, name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return c
}

type echo struct{}

func (echo) HandleEnvelope(_ context.Context, env []byte, via string) ([][]byte, error) {
	if via != agent.ViaVMMI {
		return nil, errors.New("wrong via")
	}
	if string(env) == "drop" {
		return nil, errors.New("not answered")
	}
	return [][]byte{env, append([]byte("2:"), env...)}, nil
}

func TestFramesAndLimits(t *testing.T) {
	b := start(t, echo{}, func(c *Config) { c.MaxConns = 2; c.IdleTimeout = 300 * time.Millisecond })
	c := b.dial(t, "localhost")
	if v := c.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Fatalf("TLS version %x", v)
	}
	big := bytes.Repeat([]byte{0xA5}, 64<<10)
	for _, m := range [][]byte{[]byte("x"), []byte("drop"), big} {
		if err := frame.Write(c, m); err != nil {
			t.Fatal(err)
		}
		if string(m) == "drop" {
			continue // no answer; the next frame's answers come next
		}
		for _, want := range [][]byte{m, append([]byte("2:"), m...)} {
			got, err := frame.Read(c)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("answer %d B: %v", len(got), err)
			}
		}
	}
	// Name checks: the certificate is for localhost and 127.0.0.1.
	b.dial(t, "127.0.0.1")
	if _, err := tls.Dial("tcp", b.addr, b.tlsConfig(t, "other.example")); err == nil {
		t.Fatal("certificate accepted for a name it does not carry")
	}
	// TLS 1.2 only: refused.
	c12 := b.tlsConfig(t, "localhost")
	c12.MinVersion, c12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	if _, err := tls.Dial("tcp", b.addr, c12); err == nil {
		t.Fatal("TLS 1.2 accepted")
	}
	// Two connections are open (c and the 127.0.0.1 one): a third is closed.
	c3, err := tls.Dial("tcp", b.addr, b.tlsConfig(t, "localhost"))
	if err == nil {
		c3.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = frame.Read(c3)
	}
	if err == nil || b.srv.Refused() == 0 {
		t.Fatalf("third connection served (err %v, refused %d)", err, b.srv.Refused())
	}
	// Idle deadline: c is closed by the server after 300 ms without a frame.
	c.SetDeadline(time.Now().Add(5 * time.Second))
	t0 := time.Now()
	if _, err := frame.Read(c); !errors.Is(err, io.EOF) || time.Since(t0) > 3*time.Second {
		t.Fatalf("idle connection not closed by the server: %v after %v", err, time.Since(t0))
	}
}

func TestShutdownClosesConnections(t *testing.T) {
	b := start(t, echo{}, nil)
	c := b.dial(t, "localhost")
	if err := frame.Write(c, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	frame.Read(c)
	frame.Read(c)
	b.stop(t)
	if _, err := frame.Read(c); err == nil {
		t.Fatal("connection still open after shutdown")
	}
	if _, err := net.DialTimeout("tcp", b.addr, time.Second); err == nil {
		t.Fatal("listener still open after shutdown")
	}
}

// TestAgentOverTLS: sealed requests through the real agent on a fake
// hypervisor (virttest, test:///default's rules), answered over TLS.
func TestAgentOverTLS(t *testing.T) {
	key, _ := seal.Enroll("hv1")
	pol, hv := agenttest.Host(t)
	j, err := journal.Open(filepath.Join(t.TempDir(), "j"))
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	sink := &agenttest.Sink{}
	a, err := agent.New(agent.Config{Key: key, Policy: pol, Hypervisor: hv, Journal: j, Alerts: sink, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	b := start(t, a, nil)
	c := b.dial(t, "localhost")
	v := agenttest.NewVMS(key, nil)
	ask := func(r *vmsg.Request) []vmsg.Message {
		t.Helper()
		r.IssuedMs = time.Now().UnixMilli()
		env, err := v.Seal(r)
		if err != nil {
			t.Fatal(err)
		}
		if err := frame.Write(c, env); err != nil {
			t.Fatal(err)
		}
		n := 1
		if r.Principal != "vms1" {
			n = 2 // reply + alert
		}
		var out []vmsg.Message
		for range n {
			f, err := frame.Read(c)
			if err != nil {
				t.Fatal(err)
			}
			m, err := v.Open(f)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, m)
		}
		return out
	}
	start := time.Now()
	const n = 200
	for i := range n {
		m := ask(&vmsg.Request{ID: uint64(i + 1), Principal: "vms1", Command: vmsg.CmdPing})
		if r := m[0].(*vmsg.Reply); !r.OK || r.Host.HostID != "hv1" {
			t.Fatalf("ping: %+v", r)
		}
	}
	t.Logf("sealed ping over TLS through the agent (journalled, fsync): %v per request", time.Since(start)/n)
	m := ask(&vmsg.Request{ID: 1000, Principal: "vms1", Command: vmsg.CmdShutdown, VM: "test"})
	if r := m[0].(*vmsg.Reply); !r.OK || r.VMs[0].State != "shut off" {
		t.Fatalf("shutdown: %+v", r)
	}
	m = ask(&vmsg.Request{ID: 1001, Principal: "eve", Command: vmsg.CmdStart, VM: "test"})
	if r := m[0].(*vmsg.Reply); r.Code != vmsg.ErrDenied {
		t.Fatalf("denied: %+v", r)
	}
	if _, ok := m[1].(*vmsg.Alert); !ok {
		t.Fatalf("alert: %+v", m[1])
	}
	// The agent sends alerts to its outlets in the background.
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if got, err := sink.Wait(wctx, 1); err != nil || len(got) != 1 {
		t.Fatalf("alert outlet: %+v %v", got, err)
	}
}

// slow holds "slow" until release is closed; everything else echoes.
type slow struct{ release chan struct{} }

func (s slow) HandleEnvelope(ctx context.Context, env []byte, _ string) ([][]byte, error) {
	if string(env) == "slow" {
		<-s.release
	}
	return [][]byte{env}, nil
}

// TestConcurrentOnOneConnection: a slow request does not hold up a fast one
// on the same connection, and the idle deadline does not cut a connection
// with an answer still due.
func TestConcurrentOnOneConnection(t *testing.T) {
	h := slow{release: make(chan struct{})}
	b := start(t, h, func(c *Config) { c.IdleTimeout = 100 * time.Millisecond })
	c := b.dial(t, "localhost")
	frame.Write(c, []byte("slow"))
	frame.Write(c, []byte("fast"))
	if got, err := frame.Read(c); err != nil || string(got) != "fast" {
		t.Fatalf("first answer %q %v", got, err)
	}
	time.AfterFunc(300*time.Millisecond, func() { close(h.release) }) // past the idle deadline
	if got, err := frame.Read(c); err != nil || string(got) != "slow" {
		t.Fatalf("second answer %q %v", got, err)
	}
}

// refused reports whether a connection with cfg is refused: the handshake
// fails, or (TLS 1.3 sends the server's verdict on the client certificate
// after the client's handshake is done) the first exchange does.
func refused(t *testing.T, addr string, cfg *tls.Config) error {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := frame.Write(c, []byte("x")); err != nil {
		return err
	}
	if _, err = frame.Read(c); err != nil {
		return err
	}
	// Served: hang up and wait for the server to close its side (its slot
	// is free by then), so the next connection finds it free.
	c.CloseWrite()
	waitClosed(t, c, "finished peer")
	return nil
}

// TestClientCertificates: the VMS must present a certificate from the
// client CA naming a principal the authorization list knows.
func TestClientCertificates(t *testing.T) {
	known := map[string]bool{"vms1": true}
	b := start(t, echo{}, func(c *Config) { c.KnownPrincipal = func(p string) bool { return known[p] } })
	if err := refused(t, b.addr, b.tlsConfig(t, "localhost")); err != nil {
		t.Fatalf("vms1's certificate refused: %v", err)
	}
	// Another CA (say, another site's or another lab's).
	other, err := GenerateCert(t.TempDir(), []string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	for name, cert := range map[string]*tls.Certificate{
		"no certificate":                       nil,
		"certificate from another CA":          ptr(issueFor(t, other, "vms1")),
		"certificate for an unknown principal": ptr(b.clientCert(t, "mallory")),
	} {
		cfg := &tls.Config{RootCAs: b.pool, ServerName: "localhost", MinVersion: tls.VersionTLS13}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		if err := refused(t, b.addr, cfg); err == nil {
			t.Errorf("%s: served", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	if b.srv.Served() != 2 { // the one good exchange: two answer frames
		t.Fatalf("served %d frames", b.srv.Served())
	}
}

func ptr[T any](v T) *T { return &v }

// TestHostCertificateNamesOneHost: hosts hv1 and hv2 share a CA, but a
// client talking to hv2 refuses hv1's certificate.
func TestHostCertificateNamesOneHost(t *testing.T) {
	dir := t.TempDir()
	files, err := GenerateCert(dir, []string{"hv1"})
	if err != nil {
		t.Fatal(err)
	}
	tc, _ := LoadTLS(files.Cert, files.Key)
	cas, _ := LoadClientCAs(files.CA)
	srv, err := New(Config{Handler: echo{}, TLS: tc, ClientCAs: cas, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	pemCA, _ := os.ReadFile(files.CA)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemCA)
	cert := issueFor(t, files, "vms1")
	cfg := func(name string) *tls.Config {
		return &tls.Config{RootCAs: pool, ServerName: name, MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}
	}
	if err := refused(t, ln.Addr().String(), cfg("hv1")); err != nil {
		t.Fatalf("hv1 as hv1: %v", err)
	}
	for _, name := range []string{"hv2", "127.0.0.1", "localhost"} {
		if err := refused(t, ln.Addr().String(), cfg(name)); err == nil {
			t.Errorf("hv1's certificate accepted by a client talking to %q", name)
		}
	}
}

// TestDeadlinesFreeSlots: a peer that never completes the handshake, and
// one that goes idle after it, each hold the only slot only until their
// deadline; then a working client gets it.
func TestDeadlinesFreeSlots(t *testing.T) {
	b := start(t, echo{}, func(c *Config) {
		c.MaxConns = 1
		c.HandshakeTimeout = 200 * time.Millisecond
		c.IdleTimeout = 200 * time.Millisecond
	})
	works := func() error { return refused(t, b.addr, b.tlsConfig(t, "localhost")) }

	// A bare TCP peer that says nothing.
	raw, err := net.Dial("tcp", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	waitClosed(t, raw, "silent peer")
	if err := works(); err != nil {
		t.Fatalf("slot not freed after the handshake deadline: %v", err)
	}

	// A TLS peer that goes quiet after the handshake.
	idle := b.dial(t, "localhost")
	if err := frame.Write(idle, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	frame.Read(idle)
	frame.Read(idle)
	before := b.srv.Refused()
	if err := works(); err == nil {
		t.Fatal("a second connection was served while the idle one held the only slot")
	}
	if b.srv.Refused() == before {
		t.Fatal("second connection not counted as refused")
	}
	waitClosed(t, idle, "idle peer")
	if err := works(); err != nil {
		t.Fatalf("slot not freed after the idle deadline: %v", err)
	}
}

// waitClosed waits (up to 5 s) for the server to close c.
func waitClosed(t *testing.T, c net.Conn, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 512)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("%s: server did not close the connection within 5 s", what)
		}
		return
	}
}

// TestPerSourceCap: one source address cannot take every slot; another
// source still gets in.
func TestPerSourceCap(t *testing.T) {
	b := start(t, echo{}, func(c *Config) { c.MaxConns = 8; c.MaxConnsPerSource = 2 })
	from := func(ip string) *tls.Conn {
		d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		c, err := tls.DialWithDialer(d, "tcp", b.addr, b.tlsConfig(t, "localhost"))
		if err != nil {
			t.Fatalf("dial from %s: %v", ip, err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(5 * time.Second))
		return c
	}
	ok := func(c *tls.Conn) error {
		if err := frame.Write(c, []byte("x")); err != nil {
			return err
		}
		_, err := frame.Read(c)
		if err == nil {
			_, err = frame.Read(c)
		}
		return err
	}
	for range 2 {
		if err := ok(from("127.0.0.1")); err != nil {
			t.Fatalf("connection within the cap: %v", err)
		}
	}
	third, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}},
		"tcp", b.addr, b.tlsConfig(t, "localhost"))
	if err == nil {
		third.SetDeadline(time.Now().Add(5 * time.Second))
		err = ok(third)
		third.Close()
	}
	if err == nil || b.srv.Refused() != 1 {
		t.Fatalf("third connection from one source served (err %v, refused %d)", err, b.srv.Refused())
	}
	if err := ok(from("127.0.0.2")); err != nil {
		t.Fatalf("another source refused: %v", err)
	}
}

// drainH answers "slow" once released, or gives up (no answer) when its
// context ends, as the agent does when its requester goes away.
type drainH struct{ entered, release chan struct{} }

func (d drainH) HandleEnvelope(ctx context.Context, env []byte, _ string) ([][]byte, error) {
	d.entered <- struct{}{}
	select {
	case <-d.release:
		return [][]byte{env}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// On shutdown (SIGTERM) a request already read is answered on its
// connection before it closes: the VMS gets its answer now, not over the
// OOB-I after a retry.
func TestShutdownFinishesAnswers(t *testing.T) {
	h := drainH{entered: make(chan struct{}, 1), release: make(chan struct{})}
	b := start(t, h, nil)
	c := b.dial(t, "localhost")
	if err := frame.Write(c, []byte("slow")); err != nil {
		t.Fatal(err)
	}
	<-h.entered
	b.cancel()
	// Shutdown is under way once the listener refuses.
	for deadline := time.Now().Add(5 * time.Second); ; {
		nc, err := net.DialTimeout("tcp", b.addr, time.Second)
		if err != nil {
			break
		}
		nc.Close()
		if time.Now().After(deadline) {
			t.Fatal("listener still open 5 s after shutdown began")
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(h.release)
	if got, err := frame.Read(c); err != nil || string(got) != "slow" {
		t.Fatalf("answer due at shutdown: %q %v; want it delivered before the connection closes", got, err)
	}
	if _, err := frame.Read(c); err == nil {
		t.Fatal("connection still open after its answers")
	}
	select {
	case err := <-b.done:
		b.done <- err
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
}
