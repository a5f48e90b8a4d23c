package vmmi

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
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
	"github.com/ooblab/ooblab/hvagent/policy"
	"github.com/ooblab/ooblab/hvagent/virt"
	"github.com/ooblab/ooblab/internal/frame"
	"github.com/ooblab/ooblab/internal/seal"
	"github.com/ooblab/ooblab/internal/testutil"
	"github.com/ooblab/ooblab/internal/vmsg"
)

type srvBench struct {
	addr   string
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
	cfg := Config{Handler: h, TLS: tc, Logger: testutil.Logger(t)}
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
	b := &srvBench{addr: ln.Addr().String(), srv: srv, cancel: cancel, done: make(chan error, 1)}
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

func (b *srvBench) dial(t *testing.T, name string) *tls.Conn {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", b.addr,
		&tls.Config{RootCAs: b.pool, ServerName: name, MinVersion: tls.VersionTLS13})
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
	if _, err := tls.Dial("tcp", b.addr, &tls.Config{RootCAs: b.pool, ServerName: "other.example"}); err == nil {
		t.Fatal("certificate accepted for a name it does not carry")
	}
	// TLS 1.2 only: refused.
	if _, err := tls.Dial("tcp", b.addr, &tls.Config{RootCAs: b.pool, ServerName: "localhost", MaxVersion: tls.VersionTLS12}); err == nil {
		t.Fatal("TLS 1.2 accepted")
	}
	// Two connections are open (c and the 127.0.0.1 one): a third is closed.
	c3, err := tls.Dial("tcp", b.addr, &tls.Config{RootCAs: b.pool, ServerName: "localhost"})
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

// TestAgentOverTLS: sealed requests through the real agent on
// test:///default, answered over TLS.
func TestAgentOverTLS(t *testing.T) {
	ctx := context.Background()
	key, _ := seal.Enroll("hv1")
	pol, err := policy.Parse([]byte(`
read_only_default = true
[principals.vms1]
[[principals.vms1.rules]]
actions = ["*"]
vms = ["*"]
`), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	hv, err := virt.Open(ctx, "test:///default")
	if err != nil {
		t.Fatal(err)
	}
	defer hv.Close()
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
	if _, ok := m[1].(*vmsg.Alert); !ok || len(sink.Alerts()) != 1 {
		t.Fatalf("alert: %+v", m[1])
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
