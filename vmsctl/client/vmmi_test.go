package client_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ooblab/ooblab/internal/frame"
	"github.com/ooblab/ooblab/internal/ident"
	"github.com/ooblab/ooblab/internal/inventory"
	"github.com/ooblab/ooblab/internal/pki"
	"github.com/ooblab/ooblab/internal/seal"
	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

// vmmiAgent is a TLS 1.3 server playing hvagent's VMM-I.
type vmmiAgent struct {
	ln      net.Listener
	accepts atomic.Int32
	mute    atomic.Bool // read requests, answer nothing
	// pingDelay answers pings this late (in the background), other
	// requests at once.
	pingDelay time.Duration
	inv       *inventory.Inventory
	wg        sync.WaitGroup
	// What the agent saw of the VMS's identity: the client certificate's
	// common name, and requests whose signature verifies with ops's key.
	certCN   atomic.Value
	signedOK atomic.Int32
	unsigned atomic.Int32
	opsPub   ed25519.PublicKey
}

func newVMMIAgent(t *testing.T) *vmmiAgent {
	t.Helper()
	dir := t.TempDir()
	// The lab's certificates, from internal/pki as the lab issues them: the
	// agent's names hv1.vmmi only.
	ca, err := pki.NewCA("lab CA", time.Hour, x509.KeyUsageCertSign)
	if err != nil {
		t.Fatal(err)
	}
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafPEM, err := ca.ServerCert("hv1.vmmi", &leafKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := pem.Decode(leafPEM)
	os.WriteFile(filepath.Join(dir, "ca.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}), 0o644)
	key, _ := seal.Enroll("hv1")
	os.WriteFile(filepath.Join(dir, "h1.key"), []byte(key.URI()), 0o600)

	// The "ops" principal's credential: key and client certificate.
	opsKey, _ := ident.GenerateKey()
	if err := ident.WritePrivateKey(filepath.Join(dir, "ops.key"), opsKey, false); err != nil {
		t.Fatal(err)
	}
	opsPEM, err := ca.ClientCert("ops", opsKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "ops.pem"), opsPEM, 0o644)

	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{MinVersion: tls.VersionTLS13, ClientAuth: tls.RequestClientCert,
		Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Bytes}, PrivateKey: leafKey}}})
	if err != nil {
		t.Fatal(err)
	}
	a := &vmmiAgent{ln: ln, opsPub: opsKey.Public().(ed25519.PublicKey), inv: &inventory.Inventory{Principal: "ops", Dir: dir,
		Credentials: []inventory.Credential{{Principal: "ops", KeyFile: "ops.key", CertFile: "ops.pem"}},
		Hosts: []inventory.Host{{
			Name: "h1", HostID: "hv1", SecretFile: "h1.key",
			VMMI: inventory.VMMI{Addr: ln.Addr().String(), CAFile: "ca.pem", ServerName: "hv1.vmmi"}}}}}
	op, sl := seal.NewOpener(key, seal.OpenerOptions{}), seal.NewSealer(key)
	a.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			a.accepts.Add(1)
			a.wg.Go(func() { a.serve(t, c, op, sl) })
		}
	})
	t.Cleanup(func() { ln.Close(); a.wg.Wait() })
	return a
}

func (a *vmmiAgent) serve(t *testing.T, c net.Conn, op *seal.Opener, sl *seal.Sealer) {
	defer c.Close()
	go func() { <-time.After(5 * time.Second); c.Close() }()
	var wmu sync.Mutex
	send := func(m vmsg.Message) {
		kind, body, _ := vmsg.Encode(m)
		env, _ := sl.Seal(kind, client.NewID(), body, time.Now())
		wmu.Lock()
		defer wmu.Unlock()
		frame.Write(c, env)
	}
	for {
		env, err := frame.Read(c)
		if err != nil {
			return
		}
		hdr, body, err := op.Open(env, time.Now())
		if err != nil {
			t.Errorf("agent open: %v", err)
			return
		}
		req, _ := vmsg.DecodeRequest(body)
		if tc, ok := c.(*tls.Conn); ok {
			if pc := tc.ConnectionState().PeerCertificates; len(pc) > 0 {
				a.certCN.Store(pc[0].Subject.CommonName)
			}
		}
		if req != nil {
			if len(req.Sig) == 0 {
				a.unsigned.Add(1)
			} else if _, err := ident.VerifyRequest([]ed25519.PublicKey{a.opsPub}, "hv1", req); err == nil {
				a.signedOK.Add(1)
			}
		}
		if hdr.Kind != vmsg.KindRequest || a.mute.Load() {
			continue
		}
		if req.Command == vmsg.CmdPing && a.pingDelay > 0 {
			id := req.ID
			a.wg.Go(func() {
				time.Sleep(a.pingDelay) // the agent's slow answer, not a wait in the test
				send(&vmsg.Reply{RequestID: id, OK: true})
			})
			continue
		}
		send(&vmsg.Alert{Host: "hv1", Reason: "pushed"})
		send(&vmsg.Reply{RequestID: req.ID, OK: true, VMs: []vmsg.VMState{{Name: "web1", State: "running"}}})
	}
}

func TestVMMIRoundTripReusesConnection(t *testing.T) {
	a := newVMMIAgent(t)
	c, err := client.New(a.inv, client.Options{Via: "vmmi"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 8 { // concurrent requests share the one connection
		wg.Go(func() {
			res, err := c.Do(ctx, "h1", vmsg.CmdList, "")
			if err != nil {
				t.Error(err)
				return
			}
			if res.Via != client.ViaVMMI || len(res.Reply.VMs) != 1 {
				t.Errorf("%+v", res)
			}
		})
	}
	wg.Wait()
	if n := a.accepts.Load(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
	al, _ := c.Alerts(ctx, "h1")
	if len(al) != 8 {
		t.Fatalf("%d alerts kept, want 8", len(al))
	}

	// An unanswered request ends with ctx and closes the connection; the
	// next request dials afresh.
	a.mute.Store(true)
	tctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err = c.Do(tctx, "h1", vmsg.CmdList, "")
	cancel()
	// The frame was written on the established connection: the agent has
	// the request, so its outcome is unknown, not "unreachable".
	if !errors.Is(err, client.ErrOutcomeUnknown) || errors.Is(err, client.ErrUnreachable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("mute agent: %v", err)
	}
	a.mute.Store(false)
	if _, err := c.Do(ctx, "h1", vmsg.CmdList, ""); err != nil {
		t.Fatal(err)
	}
	if n := a.accepts.Load(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
}

// TestVMMIIdentity: the client presents its principal's certificate and
// signs each request with its key; a principal the inventory has no
// credential for goes without either (and hvagent refuses it).
func TestVMMIIdentity(t *testing.T) {
	a := newVMMIAgent(t)
	c, _ := client.New(a.inv, client.Options{Via: "vmmi"})
	defer c.Close()
	if _, err := c.Do(context.Background(), "h1", vmsg.CmdList, ""); err != nil {
		t.Fatal(err)
	}
	if cn, _ := a.certCN.Load().(string); cn != "ops" || a.signedOK.Load() != 1 || a.unsigned.Load() != 0 {
		t.Fatalf("agent saw certificate %q, %d signed, %d unsigned", cn, a.signedOK.Load(), a.unsigned.Load())
	}
	b := newVMMIAgent(t)
	c2, _ := client.New(b.inv, client.Options{Via: "vmmi", Principal: "intern"})
	defer c2.Close()
	if _, err := c2.Do(context.Background(), "h1", vmsg.CmdList, ""); err != nil {
		t.Fatal(err)
	}
	if cn, _ := b.certCN.Load().(string); cn != "" || b.unsigned.Load() != 1 {
		t.Fatalf("intern: certificate %q, %d unsigned", cn, b.unsigned.Load())
	}
	// Everything on that client's targets (auto's health pings included)
	// speaks as intern; the client's inventory itself is unchanged.
	if tg, _ := c2.Target("h1"); tg.Inv.Principal != "intern" || tg.PrincipalName() != "intern" || c2.Inventory().Principal != "ops" {
		t.Fatalf("target principal %q, inventory %q", tg.Inv.Principal, c2.Inventory().Principal)
	}
}

func TestVMMIRejectsUntrustedServer(t *testing.T) {
	a := newVMMIAgent(t)
	b := newVMMIAgent(t) // another CA
	a.inv.Hosts[0].VMMI.CAFile = filepath.Join(b.inv.Dir, "ca.pem")
	c, _ := client.New(a.inv, client.Options{Via: "vmmi"})
	defer c.Close()
	_, err := c.Do(context.Background(), "h1", vmsg.CmdList, "")
	var uerr x509.UnknownAuthorityError
	if !errors.As(err, &uerr) {
		t.Fatalf("err %v, want unknown authority", err)
	}
}

// TestAutoKeepsConnectionWhenItsPingIsCancelled: in auto mode a ping goes
// beside each request on the same VMM-I connection; when the request's
// answer comes first, the ping is cancelled. That must not close the
// connection the answer just came on (it closed it, so every request
// dialled and shook hands again, and any other request on it was cut:
// "connection lost", VMM-I marked failed, the OOB-I used for 5 s).
func TestAutoKeepsConnectionWhenItsPingIsCancelled(t *testing.T) {
	a := newVMMIAgent(t)
	a.pingDelay = 500 * time.Millisecond
	c, err := client.New(a.inv, client.Options{Auto: client.AutoOptions{Budget: 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 3 {
		res, err := c.Do(context.Background(), "h1", vmsg.CmdList, "")
		if err != nil || res.Via != client.ViaVMMI {
			t.Fatalf("request %d: %+v %v", i, res, err)
		}
	}
	if n := a.accepts.Load(); n != 1 {
		t.Fatalf("%d connections for 3 requests, want 1: a cancelled ping closed the connection", n)
	}
}
