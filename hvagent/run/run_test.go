package run

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/handlers"

	"github.com/ooblab/ooblab/bmcsim/bmcsimtest"
	"github.com/ooblab/ooblab/hvagent/agenttest"
	"github.com/ooblab/ooblab/hvagent/vmmi"
	"github.com/ooblab/ooblab/internal/frame"
	"github.com/ooblab/ooblab/internal/oem"
	"github.com/ooblab/ooblab/internal/record"
	"github.com/ooblab/ooblab/internal/seal"
	"github.com/ooblab/ooblab/internal/testutil"
	"github.com/ooblab/ooblab/internal/vmsg"
)

func TestReadKeyMode(t *testing.T) {
	k, _ := seal.Enroll("hv1")
	p := filepath.Join(t.TempDir(), "key")
	os.WriteFile(p, []byte(k.URI()+"\n"), 0o644)
	if _, err := ReadKey(p); err == nil || !strings.Contains(err.Error(), "0600") {
		t.Fatalf("0644 key accepted: %v", err)
	}
	os.Chmod(p, 0o600)
	got, err := ReadKey(p)
	if err != nil || got.HostID() != "hv1" {
		t.Fatalf("%v %v", got, err)
	}
}

// TestRunBothChannels starts the whole agent against an in-process bmcsim
// (chardev KCS) and serves one request on each channel.
func TestRunBothChannels(t *testing.T) {
	dir := t.TempDir()
	log := testutil.Logger(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The BMC: bmcsim's own host (queues, notifier, KCS server).
	bs := bmcsimtest.Start(t, bmcsimtest.Options{Logger: log})
	b := bs.BMC

	key, _ := seal.Enroll("hv1")
	os.WriteFile(filepath.Join(dir, "key"), []byte(key.URI()), 0o600)
	os.WriteFile(filepath.Join(dir, "authz.toml"), []byte("read_only_default = true\n[principals.vms1]\n"+agenttest.KeysLine("vms1")), 0o644)
	certs, err := vmmi.GenerateCert(filepath.Join(dir, "tls"), []string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan Status, 1)
	rctx, rcancel := context.WithCancel(ctx)
	rdone := make(chan error, 1)
	go func() {
		rdone <- Run(rctx, Options{KeyFile: filepath.Join(dir, "key"), PolicyFile: filepath.Join(dir, "authz.toml"),
			LibvirtURI: "test:///default", Sysif: "chardev:" + bs.KCSAddr(), VMMIAddr: "127.0.0.1:0",
			TLSCert: certs.Cert, TLSKey: certs.Key, TLSClientCA: certs.CA, JournalFile: filepath.Join(dir, "journal"),
			PollInterval: 50 * time.Millisecond, Logger: log, Ready: func(s Status) { ready <- s }})
	}()
	var st Status
	select {
	case st = <-ready:
	case err := <-rdone:
		t.Fatalf("Run: %v", err)
	}
	if !strings.HasPrefix(st.OOB, "up") || !strings.Contains(st.OOB, "queue 1 0/") || !strings.HasPrefix(st.VMMI, "listening") {
		t.Fatalf("status %+v", st)
	}
	v := agenttest.NewVMS(key, nil)
	ping := func(id uint64) []byte {
		env, err := v.Seal(&vmsg.Request{ID: id, Principal: "vms1", Command: vmsg.CmdPing, IssuedMs: time.Now().UnixMilli()})
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	expectPong := func(env []byte, id uint64) {
		t.Helper()
		m, err := v.Open(env)
		if err != nil {
			t.Fatal(err)
		}
		if r, ok := m.(*vmsg.Reply); !ok || !r.OK || r.RequestID != id || r.Host.Libvirt == "" {
			t.Fatalf("pong %+v", m)
		}
	}

	// VMM-I.
	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(certs.CA)
	pool.AppendCertsFromPEM(caPEM)
	k := agenttest.Key("vms1")
	cpem, err := vmmi.IssueClientCert(certs, "vms1", k.Public())
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(cpem)
	c, err := tls.Dial("tcp", st.Addr.String(), &tls.Config{RootCAs: pool, ServerName: "localhost",
		Certificates: []tls.Certificate{{Certificate: [][]byte{blk.Bytes}, PrivateKey: k}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	frame.Write(c, ping(1))
	got, err := frame.Read(c)
	if err != nil {
		t.Fatal(err)
	}
	expectPong(got, 1)

	// OOB-I: the VMS side through the registry with a LAN operator session.
	lan := &handlers.HandlerContext{Session: &bmc.Session{PrivilegeLevel: bmc.PrivilegeLevelOperator, User: &bmc.User{Name: "vms"}}, Channel: &bmc.Channel{Number: 1, Medium: bmc.ChannelMediumLAN}}
	recs, _ := record.Fragment(99, ping(2))
	for _, r := range recs {
		data, _ := (&oem.WriteQueueRequest{IANA: oem.DefaultIANA, Record: r}).Pack()
		if _, cc, _ := b.Registry.Dispatch(ctx, lan, uint8(oem.NetFnOEMGroupRequest), uint8(oem.CmdWriteQueue1), data); cc != 0 {
			t.Fatalf("write queue 1: %#x", cc)
		}
	}
	ra := record.NewReassembler(record.ReassemblerConfig{})
	for {
		data, _ := (&oem.ReadQueueRequest{IANA: oem.DefaultIANA}).Pack()
		resp, cc, _ := b.Registry.Dispatch(ctx, lan, uint8(oem.NetFnOEMGroupRequest), uint8(oem.CmdReadQueue2), data)
		var r oem.ReadQueueResponse
		if cc != 0 || r.Unpack(resp) != nil {
			t.Fatalf("read queue 2: %#x", cc)
		}
		if r.Empty {
			select {
			case <-ctx.Done():
				t.Fatal("no answer on queue 2")
			case <-time.After(5 * time.Millisecond):
			}
			continue
		}
		msg, done, err := ra.Add(r.Record, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if done {
			expectPong(msg, 2)
			break
		}
	}
	rcancel()
	if err := <-rdone; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// The journal's retention defaults to 24 h and cannot be shorter than
// twice the issue-time window.
func TestJournalRetentionOption(t *testing.T) {
	o := Options{VMMIAddr: ":0", JournalFile: "j"}
	if err := checkOptions(&o); err != nil || o.JournalRetention != 24*time.Hour {
		t.Fatalf("default: %v, %v", o.JournalRetention, err)
	}
	o = Options{VMMIAddr: ":0", JournalFile: "j", JournalRetention: 5 * time.Minute}
	if err := checkOptions(&o); err == nil || !strings.Contains(err.Error(), "--journal-retention") {
		t.Fatalf("5m accepted: %v", err)
	}
}
