package hostile

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ooblab/ooblab/hvagent/run"
	"github.com/ooblab/ooblab/hvagent/vmmi"
	"github.com/ooblab/ooblab/internal/fileio"
	"github.com/ooblab/ooblab/internal/ident"
	"github.com/ooblab/ooblab/internal/inventory"
	"github.com/ooblab/ooblab/internal/seal"
	"github.com/ooblab/ooblab/internal/testutil"
	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

// host is one hvagent serving the VMM-I on 127.0.0.1, and the inventory a
// VMS uses for it.
type host struct {
	addr   string
	inv    *inventory.Inventory
	alerts string // the alert hook's output (one JSON alert a line)
}

// startHost runs hvagent's own Run (VMM-I only) with an alert hook, and
// writes the VMS's inventory: host key, principal "vms" (signing key and
// client certificate), the host's CA and name.
func startHost(t *testing.T) *host {
	t.Helper()
	dir := t.TempDir()
	key, err := seal.Enroll("hv1")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "hv1.key")
	if err := os.WriteFile(keyFile, []byte(key.URI()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pk, err := ident.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := ident.WritePrivateKey(filepath.Join(dir, "vms.key"), pk, true); err != nil {
		t.Fatal(err)
	}
	policy := filepath.Join(dir, "authz.toml")
	pol := fmt.Sprintf("read_only_default = true\n[principals.vms]\nkeys = [%q]\n", ident.FormatPublicKey(pk.Public().(ed25519.PublicKey)))
	if err := os.WriteFile(policy, []byte(pol), 0o600); err != nil {
		t.Fatal(err)
	}
	certs, err := vmmi.GenerateCert(filepath.Join(dir, "tls"), []string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := vmmi.IssueClientCert(certs, "vms", pk.Public())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "vms.pem"), cert, 0o644); err != nil {
		t.Fatal(err)
	}
	h := &host{alerts: filepath.Join(dir, "alerts.json")}
	ready := make(chan run.Status, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run.Run(ctx, run.Options{KeyFile: keyFile, PolicyFile: policy, LibvirtURI: "test:///default",
			VMMIAddr: "127.0.0.1:0", TLSCert: certs.Cert, TLSKey: certs.Key, TLSClientCA: certs.CA,
			JournalFile: filepath.Join(dir, "journal"), AlertHook: "cat >> " + h.alerts,
			Logger: testutil.Logger(t), Ready: func(s run.Status) { ready <- s }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case st := <-ready:
		h.addr = st.Addr.String()
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("hvagent not ready within 30 s")
	}
	inv := &inventory.Inventory{Principal: "vms",
		Credentials: []inventory.Credential{{Principal: "vms", KeyFile: "vms.key", CertFile: "vms.pem"}},
		Hosts: []inventory.Host{{Name: "hv1", HostID: "hv1", SecretFile: "hv1.key",
			VMMI: inventory.VMMI{Addr: h.addr, CAFile: filepath.Join("tls", "ca.pem"), ServerName: "localhost"}}}}
	invFile := filepath.Join(dir, "inventory.json")
	if err := fileio.SaveInventory(inv, invFile); err != nil {
		t.Fatal(err)
	}
	if h.inv, err = fileio.LoadInventory(invFile); err != nil {
		t.Fatal(err)
	}
	return h
}

// vms is vmsctl's client for h over the VMM-I only (--via vmmi), with the
// clock now.
func (h *host) vms(t *testing.T, now func() time.Time) *client.Client {
	t.Helper()
	cl, err := client.New(h.inv, client.Options{Via: client.ViaVMMI, Now: now, Logger: testutil.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// silentPeers keeps n bare TCP connections from each source open to addr,
// saying nothing, each dialled again as soon as the server closes it,
// until the test ends. It returns once every peer has connected once.
func silentPeers(t *testing.T, addr string, sources []string, n int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg, connected sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for _, src := range sources {
		d := &net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		for range n {
			connected.Add(1)
			once := sync.OnceFunc(connected.Done)
			wg.Go(func() {
				defer once()
				for ctx.Err() == nil {
					c, err := d.DialContext(ctx, "tcp", addr)
					if err != nil {
						select {
						case <-ctx.Done():
						case <-time.After(10 * time.Millisecond):
						}
						continue
					}
					once()
					stop := context.AfterFunc(ctx, func() { c.Close() })
					c.Read(make([]byte, 1))
					stop()
					c.Close()
				}
			})
		}
	}
	all := make(chan struct{})
	go func() { connected.Wait(); close(all) }()
	select {
	case <-all:
	case <-time.After(10 * time.Second):
		t.Fatal("silent peers not connected within 10 s")
	}
}

// TestVMMIUnderSilentPeers: 64 silent TCP peers, 16 from each of 4
// addresses, renewed as soon as closed (issue 20, hole 3), while
// `vmsctl vm list --via vmmi` still gets its answer from hvagent. On the
// old code the peers held all 64 slots and the VMS's connection was closed
// at once.
func TestVMMIUnderSilentPeers(t *testing.T) {
	h := startHost(t)
	silentPeers(t, h.addr, []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"}, 16)
	cl := h.vms(t, nil)
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, err := cl.Do(ctx, "hv1", vmsg.CmdList, "")
		cancel()
		if err != nil {
			t.Fatalf("vm list %d with 64 silent peers: %v", i, err)
		}
		if res.Via != client.ViaVMMI || len(res.Reply.VMs) != 1 {
			t.Fatalf("vm list %d: via %s, %+v", i, res.Via, res.Reply.VMs)
		}
		t.Logf("vm list %d with 64 silent peers: %v", i, res.Latency)
	}
}

// TestClockSteppedBack: a VMS whose clock was stepped back by 312 s gets a
// loud answer over the VMM-I — ErrClockSkew, "host is 312 s ahead of this
// VMS's clock", the offset in Result — and the host alerts for a state
// change (a stale read is answered the same, logged, not alerted); a VMS
// 20 s off is served. On the old code the request went unanswered (a
// timeout) and nothing was alerted.
func TestClockSteppedBack(t *testing.T) {
	h := startHost(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	back := h.vms(t, func() time.Time { return time.Now().Add(-312 * time.Second) })
	if _, err := back.Do(ctx, "hv1", vmsg.CmdList, ""); !strings.Contains(fmt.Sprint(err), "clock skew: host is 312 s ahead") {
		t.Fatalf("stepped-back VMS's read: %v", err)
	}
	res, err := back.Do(ctx, "hv1", vmsg.CmdStart, "test")
	var re *client.ReplyError
	if !errors.As(err, &re) || re.Code != vmsg.ErrClockSkew || !strings.Contains(err.Error(), "clock skew: host is 312 s ahead of this VMS's clock") {
		t.Fatalf("stepped-back VMS: %v", err)
	}
	if res == nil || res.ClockOffset == nil || (*res.ClockOffset-312*time.Second).Abs() > 2*time.Second {
		t.Fatalf("measured offset: %+v", res)
	}
	t.Logf("%v", err)
	for end := time.Now().Add(10 * time.Second); ; {
		b, _ := os.ReadFile(h.alerts)
		if strings.Contains(string(b), "clock skew: vms's request came from a clock 312 s behind this host's") {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("no clock skew alert within 10 s; hook got %q", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Within the tolerance: served.
	near := h.vms(t, func() time.Time { return time.Now().Add(-20 * time.Second) })
	res, err = near.Do(ctx, "hv1", vmsg.CmdPing, "")
	if err != nil || res.ClockOffset == nil || (*res.ClockOffset-20*time.Second).Abs() > 2*time.Second {
		t.Fatalf("VMS 20 s behind: %+v %v", res, err)
	}
}
