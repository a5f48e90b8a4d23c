package cmd

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ooblab/ooblab/internal/fileio"
	"github.com/ooblab/ooblab/internal/ident"
	"github.com/ooblab/ooblab/internal/inventory"
	"github.com/ooblab/ooblab/internal/pki"
	"github.com/ooblab/ooblab/internal/seal"
	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
	"github.com/ooblab/ooblab/vmsctl/client/clienttest"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

// agent plays hvagent for the CLI: web1 runs, db1 is protected.
func agent(opSecret []byte, j *fakeJournal) func(ctx context.Context, host string, req *vmsg.Request) (vmsg.Message, error) {
	nonce := []byte("nonce-0123456789")
	return func(ctx context.Context, host string, req *vmsg.Request) (vmsg.Message, error) {
		if host == "dead" {
			return clienttest.Unreachable(ctx, host, req)
		}
		if req.VM == "slow1" && req.Command == vmsg.CmdReboot {
			// The host runs it (once per request id, as hvagent's journal
			// sees to) and journals it; its answer is lost on every
			// channel (queue 2 full, the reader evicted, a link cut).
			j.run(req)
			return clienttest.Lost(ctx, host, req)
		}
		rep := &vmsg.Reply{RequestID: req.ID, OK: true}
		switch {
		case req.Command == vmsg.CmdList:
			rep.VMs = []vmsg.VMState{{Name: "web1", State: "running", Reason: "booted", VCPUs: 1, MemoryKiB: 131072, MaxMemKiB: 131072,
				UptimeSec: 61, UptimeSource: "qemu-process", CPUTimeMs: 2340, Persistent: true, Autostart: true},
				{Name: "db1", State: "shut off", Reason: "destroyed", VCPUs: 2, MemoryKiB: 65536, MaxMemKiB: 65536, Persistent: true}}
		case req.Command == vmsg.CmdStatus && req.VM == "web1":
			rep.VMs = []vmsg.VMState{{Name: "web1", State: "running", Reason: "booted", VCPUs: 1, MemoryKiB: 131072, MaxMemKiB: 131072,
				UptimeSec: 61, UptimeSource: "qemu-process", CPUTimeMs: 2340, Persistent: true, Autostart: true}}
		case req.Command == vmsg.CmdHistory:
			defer func() { rep.History = append(rep.History, j.items()...) }()
			rep.History = []vmsg.HistoryItem{
				{RequestID: 0x1111, OK: true, State: "running", Executed: vmsg.Executed{Principal: "ops", Command: vmsg.CmdStart, VM: "web1",
					OOBAddr: "10.0.1.1:623", VMMAddr: "10.0.0.1:7443", Metadata: map[string]string{"ticket": "OPS-42"}, Via: "oob-i",
					TimeMs: time.Date(2026, 11, 29, 13, 0, 0, 0, time.UTC).UnixMilli()}},
				{RequestID: 0x2222, Code: vmsg.ErrHypervisor, Error: "cannot suspend VM \"db1\" while shut off", Executed: vmsg.Executed{
					Principal: "ops", Command: vmsg.CmdSuspend, VM: "db1", Via: "vmm-i", TimeMs: time.Date(2026, 11, 29, 13, 5, 0, 0, time.UTC).UnixMilli()}},
			}
		case req.Command == vmsg.CmdPing:
			// The host's clock 1.5 s ahead of the goldens' VMS clock.
			rep.Host = &vmsg.HostInfo{HostID: host, Hostname: host + ".lab", Hypervisor: "QEMU", Libvirt: "9.0.0",
				TimeMs: time.Date(2026, 11, 29, 14, 0, 1, 500e6, time.UTC).UnixMilli()}
		case req.VM == "nope":
			return &vmsg.Reply{RequestID: req.ID, Code: vmsg.ErrNoSuchVM, Error: "virt: no such VM"}, nil
		case req.VM == "app1" && req.Command == vmsg.CmdStart: // the agent restarted while it ran
			return &vmsg.Reply{RequestID: req.ID, Code: vmsg.ErrInterrupted, Error: "the request began before an agent restart and its outcome is unknown",
				VMs: []vmsg.VMState{{Name: "app1", State: "paused", Reason: "starting up"}}}, nil
		case req.VM == "secret":
			return &vmsg.Reply{RequestID: req.ID, Code: vmsg.ErrDenied, Error: "denied: no rule allows ops to start secret"}, nil
		case req.VM == "db1" && req.Command.ChangesState():
			if req.Answer == nil {
				return &vmsg.Challenge{RequestID: req.ID, Nonce: nonce, VM: req.VM, Command: req.Command, ExpiresMs: time.Now().Add(time.Minute).UnixMilli()}, nil
			}
			if _, ok := seal.VerifyChallengeCode(opSecret, nonce, req.Answer.Code, time.Now()); !ok {
				return &vmsg.Reply{RequestID: req.ID, Code: vmsg.ErrChallengeNo, Error: "challenge refused: challenge: wrong code"}, nil
			}
		}
		if req.Command.ChangesState() {
			rep.Executed = &vmsg.Executed{Principal: req.Principal, Command: req.Command, VM: req.VM, Metadata: req.Metadata,
				OOBAddr: req.OOBAddr, VMMAddr: req.VMMAddr}
		}
		return rep, nil
	}
}

type rig struct {
	dir      string
	inv      string
	vmmi     *clienttest.Fake
	oob      *clienttest.Fake
	opSecret []byte
	opFile   string
	now      func() time.Time // nil: the clock
	env      map[string]string
	journal  *fakeJournal
}

// fakeJournal is the host's journal as far as the CLI sees it: each
// request id runs once, and history lists what ran.
type fakeJournal struct {
	mu   sync.Mutex
	m    map[uint64]vmsg.HistoryItem
	runs int // actions run
	// nreads counts history answers (reads).
	nreads int
}

func (j *fakeJournal) run(req *vmsg.Request) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, ok := j.m[req.ID]; ok {
		return // a duplicate: answered from the journal, not run again
	}
	j.runs++
	j.m[req.ID] = vmsg.HistoryItem{RequestID: req.ID, OK: true, State: "running", Executed: vmsg.Executed{Principal: req.Principal,
		Command: req.Command, VM: req.VM, Via: client.ViaVMMI, TimeMs: time.Date(2026, 11, 29, 13, 30, 0, 0, time.UTC).UnixMilli()}}
}

// set puts it in the history as it is (a test's own item).
func (j *fakeJournal) set(it vmsg.HistoryItem) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.m[it.RequestID] = it
}

// reads is how many history answers listed the journal.
func (j *fakeJournal) reads() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.nreads
}

func (j *fakeJournal) items() []vmsg.HistoryItem {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.nreads++
	var out []vmsg.HistoryItem
	for _, it := range j.m {
		out = append(out, it)
	}
	return out
}

func (j *fakeJournal) count() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.runs
}

func newRig(t *testing.T) *rig {
	t.Helper()
	dir := t.TempDir()
	inv := &inventory.Inventory{Principal: "ops", Hosts: []inventory.Host{
		{Name: "h1", HostID: "hv1", VMMI: inventory.VMMI{Addr: "10.0.0.1:7443"}, BMC: inventory.BMC{Addr: "10.0.1.1:623"}},
		{Name: "dead", HostID: "hv9"},
	},
		// Explicit, so the golden files do not depend on this machine's
		// addresses (client.TestVMSAddrs covers the learnt ones).
		VMS: inventory.VMS{OOBI: "192.0.2.10", VMMI: "198.51.100.10"}}
	p := filepath.Join(dir, "inventory.json")
	if err := fileio.SaveInventory(inv, p); err != nil {
		t.Fatal(err)
	}
	k, _ := seal.Enroll("alice")
	opFile := filepath.Join(dir, "alice.key")
	os.WriteFile(opFile, []byte(k.URI()), 0o600)
	r := &rig{dir: dir, inv: p, opSecret: k.Secret(), opFile: opFile}
	r.journal = &fakeJournal{m: map[uint64]vmsg.HistoryItem{}}
	r.vmmi = &clienttest.Fake{ChannelName: client.ViaVMMI, Latency: 3 * time.Millisecond, Handle: agent(r.opSecret, r.journal)}
	r.oob = &clienttest.Fake{ChannelName: client.ViaOOB, Latency: 41 * time.Millisecond, Handle: agent(r.opSecret, r.journal)}
	return r
}

func (r *rig) run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	a := &App{In: strings.NewReader(""), Out: &out, Err: &errb, Now: r.now,
		Getenv: func(k string) string { return r.env[k] },
		Options: func(o *client.Options) {
			o.VMMI, o.OOB = r.vmmi, r.oob
			o.Auto.Budget = 20 * time.Millisecond
		}}
	code = a.Run(context.Background(), append([]string{"--inventory", r.inv}, args...))
	return code, out.String(), errb.String()
}

func TestExitCodes(t *testing.T) {
	r := newRig(t)
	for _, tt := range []struct {
		args []string
		want int
	}{
		{[]string{"vm", "list", "h1"}, ExitOK},
		{[]string{"vm", "start", "h1", "web1"}, ExitOK},
		{[]string{"vm", "list", "h1", "h2"}, ExitUsage}, // no host lists every host (fanout.go)
		{[]string{"vm", "frobnicate", "h1"}, ExitUsage},
		{[]string{"--bogus"}, ExitUsage},
		{[]string{"-o", "xml", "vm", "list", "h1"}, ExitUsage},
		{[]string{"vm", "list", "nosuchhost"}, ExitUsage},
		{[]string{"vm", "start", "h1", "secret"}, ExitRefused},
		{[]string{"vm", "destroy", "h1", "db1"}, ExitChallenge},                // no code source, stdin not a terminal
		{[]string{"--otp", "000000", "vm", "destroy", "h1", "db1"}, ExitUsage}, // never in argv (answer.go)
		{[]string{"--otp-secret-file", r.opFile, "vm", "destroy", "h1", "db1"}, ExitOK},
		{[]string{"--timeout", "200ms", "vm", "list", "dead"}, ExitUnreachable},
		{[]string{"--timeout", "0s", "vm", "list", "h1"}, ExitUsage},
		{[]string{"--timeout", "-1s", "vm", "list", "h1"}, ExitUsage},
		{[]string{"--timeout", "300ms", "vm", "reboot", "h1", "slow1"}, ExitUnknown}, // delivered, answer lost
		{[]string{"vm", "status", "h1", "nope"}, ExitNoVM},
		{[]string{"vm", "start", "h1", "app1"}, ExitInterrupted},
		{[]string{"--timeout", "200ms", "host", "status"}, ExitUnreachable}, // dead host
		{[]string{"host", "status", "h1"}, ExitOK},
		{[]string{"--oob-sessions", "0", "vm", "list", "h1"}, ExitUsage},
		{[]string{"--oob-window", "4", "--oob-sessions", "5", "vm", "list", "h1"}, ExitUsage},
		{[]string{"--oob-window", "65", "vm", "list", "h1"}, ExitUsage},
		{[]string{"--oob-window", "1", "--oob-sessions", "1", "vm", "list", "h1"}, ExitOK},
	} {
		if got, out, errs := r.run(t, tt.args...); got != tt.want {
			t.Errorf("%v: exit %d, want %d\nstdout: %s\nstderr: %s", tt.args, got, tt.want, out, errs)
		}
	}
	if ExitCode(nil) != 0 || ExitCode(errors.New("x")) != 1 {
		t.Fatal("ExitCode basics")
	}
}

// --oob-window and --oob-sessions reach the OOB-I channel's options.
func TestOOBFlags(t *testing.T) {
	r := newRig(t)
	for _, tt := range []struct {
		args             []string
		window, sessions int
	}{
		{nil, 8, 3},
		{[]string{"--oob-sessions", "1"}, 8, 1},
		{[]string{"--oob-window", "2", "--oob-sessions", "2"}, 2, 2},
	} {
		var got client.OOBOptions
		a := &App{In: strings.NewReader(""), Out: io.Discard, Err: io.Discard, Now: r.now,
			Getenv: func(k string) string { return r.env[k] },
			Options: func(o *client.Options) {
				got = o.OOBOptions
				o.VMMI, o.OOB = r.vmmi, r.oob
			}}
		args := append(append([]string{"--inventory", r.inv}, tt.args...), "vm", "list", "h1")
		if code := a.Run(context.Background(), args); code != ExitOK {
			t.Fatalf("%v: exit %d", tt.args, code)
		}
		if got.Window != tt.window || got.Sessions != tt.sessions {
			t.Errorf("%v: window %d sessions %d, want %d %d", tt.args, got.Window, got.Sessions, tt.window, tt.sessions)
		}
	}
}

// An action cut by an agent restart is reported as what it is: outcome
// unknown, with the VM's state now; neither "refused" nor "failed".
func TestInterruptedTellsTheTruth(t *testing.T) {
	r := newRig(t)
	code, out, errs := r.run(t, "vm", "start", "h1", "app1")
	if code != ExitInterrupted {
		t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, ExitInterrupted, out, errs)
	}
	for _, want := range []string{"start was interrupted by an agent restart; app1 is now paused (starting up)", "outcome unknown: interrupted"} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
	for _, bad := range []string{"refused", "failed"} {
		if strings.Contains(errs, bad) {
			t.Errorf("stderr says %q for an interrupted action:\n%s", bad, errs)
		}
	}
}

func TestTableShowsChannelAndLatency(t *testing.T) {
	r := newRig(t)
	code, out, _ := r.run(t, "vm", "list", "h1")
	if code != 0 || !strings.Contains(out, "web1") || !strings.Contains(out, "via vmm-i 3ms") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	code, out, _ = r.run(t, "--via", "oob", "vm", "reboot", "h1", "web1")
	if code != 0 || !strings.Contains(out, "reboot web1 on h1: ok, via oob-i 41ms") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	// auto: a dead VMM-I falls over to OOB-I.
	r.vmmi.Handle = clienttest.Timeout
	code, out, _ = r.run(t, "vm", "list", "h1")
	if code != 0 || !strings.Contains(out, "via oob-i 41ms") {
		t.Fatalf("fallback: exit %d:\n%s", code, out)
	}
}

func TestJSONAndYAML(t *testing.T) {
	r := newRig(t)
	code, out, _ := r.run(t, "-o", "json", "--otp-secret-file", r.opFile, "vm", "shutdown", "h1", "db1")
	var v vmResult
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || !v.OK || v.Via != "vmm-i" || !v.Challenged || v.LatencyMs != 3 {
		t.Fatalf("json: exit %d %+v\n%s", code, v, out)
	}
	code, out, _ = r.run(t, "-o", "yaml", "vm", "list", "h1")
	var y map[string]any
	if code != 0 || yaml.Unmarshal([]byte(out), &y) != nil || y["via"] != "vmm-i" || len(y["vms"].([]any)) != 2 {
		t.Fatalf("yaml: exit %d %v\n%s", code, y, out)
	}
	code, out, _ = r.run(t, "-o", "json", "host", "list")
	var hosts []hostRow
	if code != 0 || json.Unmarshal([]byte(out), &hosts) != nil || len(hosts) != 2 || hosts[0].BMC != "10.0.1.1:623" {
		t.Fatalf("host list: %s", out)
	}
}

func TestAlerts(t *testing.T) {
	r := newRig(t)
	r.oob.PushAlert("h1", &vmsg.Alert{TimeMs: time.Now().UnixMilli(), Principal: "mallory", VM: "db1", Action: "destroy", Reason: "denied by policy"})
	code, out, _ := r.run(t, "alerts", "h1")
	if code != 0 || !strings.Contains(out, "mallory") || !strings.Contains(out, "denied by policy") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

// vmsctl alerts reads the BMC's alert log as a durable follower only with
// --follower-id (the user wants to resume there later); a one-shot run is
// a follower the BMC forgets a minute after it.
func TestAlertsDurableOnlyWithFollowerID(t *testing.T) {
	r := newRig(t)
	for _, tt := range []struct {
		args      []string
		requester uint32
		durable   bool
	}{
		{[]string{"alerts", "h1"}, 0, false},
		{[]string{"alerts", "--follower-id", "7", "h1"}, 7, true},
		{[]string{"vm", "list", "h1"}, 0, false},
	} {
		var got client.OOBOptions
		var out, errb bytes.Buffer
		a := &App{In: strings.NewReader(""), Out: &out, Err: &errb, Now: r.now,
			Getenv: func(k string) string { return r.env[k] },
			Options: func(o *client.Options) {
				got = o.OOBOptions
				o.VMMI, o.OOB = r.vmmi, r.oob
			}}
		if code := a.Run(context.Background(), append([]string{"--inventory", r.inv}, tt.args...)); code != 0 {
			t.Fatalf("%v: exit %d: %s", tt.args, code, errb.String())
		}
		if got.Requester != tt.requester || got.Durable != tt.durable {
			t.Fatalf("%v: requester %d durable %v, want %d %v", tt.args, got.Requester, got.Durable, tt.requester, tt.durable)
		}
	}
}

func TestEnrollWritesKeyAndInventory(t *testing.T) {
	r := newRig(t)
	qr := filepath.Join(r.dir, "h1.png")
	code, out, errs := r.run(t, "enroll", "h1", "--qr", qr)
	if code != 0 || !strings.HasPrefix(out, "otpauth://totp/") {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	inv, err := fileio.LoadInventory(r.inv)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := inv.Host("h1")
	st, err := os.Stat(inv.Path(h.SecretFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v %v", st, err)
	}
	b, _ := os.ReadFile(inv.Path(h.SecretFile))
	k, err := seal.ParseKey(strings.TrimSpace(string(b)))
	if err != nil || k.HostID() != "hv1" {
		t.Fatalf("key %v %v", k, err)
	}
	if png, err := os.ReadFile(qr); err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("qr: %v", err)
	}
	// A second enroll refuses to replace the key.
	if code, _, _ := r.run(t, "enroll", "h1"); code != ExitUsage {
		t.Fatalf("re-enroll exit %d", code)
	}

	// Operator enrollment, then 'user code' answers a nonce.
	code, out, _ = r.run(t, "user", "enroll", "bob")
	if code != 0 || !strings.Contains(out, "otpauth://totp/") {
		t.Fatalf("user enroll: %d %s", code, out)
	}
	inv, _ = fileio.LoadInventory(r.inv)
	if len(inv.Operators) != 1 || inv.Operators[0].Name != "bob" {
		t.Fatalf("operators %+v", inv.Operators)
	}
	// What the operator's phone gets: a QR code on the terminal and as a
	// PNG beside the key, of a standard otpauth:// URI an app can use.
	if !strings.Contains(out, "▀") && !strings.Contains(out, "█") {
		t.Fatalf("no QR code drawn on the terminal:\n%s", out)
	}
	pngPath := strings.TrimSuffix(inv.Path(inv.Operators[0].SecretFile), ".key") + ".png"
	if png, err := os.ReadFile(pngPath); err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("user QR PNG: %v", err)
	}
	uri := out[strings.Index(out, "otpauth://"):]
	uri = uri[:strings.IndexByte(uri, '\n')]
	key, err := otp.NewKeyFromURL(uri)
	if err != nil || key.Type() != "totp" || key.Period() != 30 || key.Digits() != otp.DigitsSix || key.Algorithm() != otp.AlgorithmSHA1 {
		t.Fatalf("enrolled URI %q is not a standard authenticator key: %v", uri, err)
	}
	app, err := totp.GenerateCode(key.Secret(), time.Now())
	if err != nil || len(app) != 6 {
		t.Fatalf("app code from the URI: %q %v", app, err)
	}
	// 'user code NAME' prints what the app shows (the step may roll over
	// between the two reads; then the next step's code).
	code, out, _ = r.run(t, "user", "code", "bob")
	next, _ := totp.GenerateCode(key.Secret(), time.Now())
	if got := strings.TrimSpace(out); code != 0 || got != app && got != next {
		t.Fatalf("user code without nonce: %d %q, want %q", code, got, app)
	}
	code, out, _ = r.run(t, "user", "code", "bob", "00112233")
	secret, _ := readUserSecret(inv.Path(inv.Operators[0].SecretFile))
	if code != 0 || strings.TrimSpace(out) != seal.ChallengeCode(secret, []byte{0, 0x11, 0x22, 0x33}, time.Now()) {
		t.Fatalf("user code: %d %q", code, out)
	}
}

func TestWatchOnce(t *testing.T) {
	r := newRig(t)
	code, out, _ := r.run(t, "--timeout", "300ms", "watch", "--once", "--interval", "200ms")
	if code != 0 || !strings.Contains(out, "h1") || !strings.Contains(out, "web1") || !strings.Contains(out, "DOWN") {
		t.Fatalf("exit %d\n%s", code, out)
	}
}

func TestFindInventory(t *testing.T) {
	root := t.TempDir()
	deep := filepath.Join(root, "a", "b")
	os.MkdirAll(deep, 0o755)
	os.MkdirAll(filepath.Join(root, ".lab"), 0o755)
	want := filepath.Join(root, ".lab", "inventory.json")
	os.WriteFile(want, []byte("{}"), 0o600)
	env := func(string) string { return "" }
	if p, err := FindInventory("", env, deep, ""); err != nil || p != want {
		t.Fatalf("walk up: %q %v", p, err)
	}
	if p, _ := FindInventory("", func(string) string { return "/x.json" }, deep, ""); p != "/x.json" {
		t.Fatalf("env: %q", p)
	}
	if p, _ := FindInventory("/f.json", func(string) string { return "/x.json" }, deep, ""); p != "/f.json" {
		t.Fatalf("flag: %q", p)
	}
	home := t.TempDir()
	hp := filepath.Join(home, ".local", "state", "ooblab", "lab")
	os.MkdirAll(hp, 0o755)
	os.WriteFile(filepath.Join(hp, "inventory.json"), []byte("{}"), 0o600)
	if p, err := FindInventory("", env, t.TempDir(), home); err != nil || p != filepath.Join(hp, "inventory.json") {
		t.Fatalf("home: %q %v", p, err)
	}
	if _, err := FindInventory("", env, t.TempDir(), t.TempDir()); ExitCode(err) != ExitUsage {
		t.Fatalf("none: %v", err)
	}
}

func writeTestCA(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	ca, err := pki.NewCA("site CA", time.Hour, x509.KeyUsageCertSign|x509.KeyUsageCRLSign)
	if err != nil {
		t.Fatal(err)
	}
	cpem, kpem, err := ca.PEM()
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	os.WriteFile(certFile, cpem, 0o644)
	os.WriteFile(keyFile, kpem, 0o600)
	return certFile, keyFile
}

// TestPrincipalEnrollAndRotate: enroll writes the key 0600 and its client
// certificate and prints the policy line; --next and activate rotate it
// with both keys in the policy line meanwhile.
func TestPrincipalEnrollAndRotate(t *testing.T) {
	r := newRig(t)
	caCert, caKey := writeTestCA(t, r.dir)
	enroll := func(args ...string) principalResult {
		t.Helper()
		code, out, errs := r.run(t, append([]string{"-o", "json", "principal", "enroll", "vms", "--ca-cert", caCert, "--ca-key", caKey}, args...)...)
		if code != 0 {
			t.Fatalf("exit %d: %s %s", code, out, errs)
		}
		var res principalResult
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return res
	}
	pubOf := func(path string) string {
		t.Helper()
		k, err := ident.LoadPrivateKey(path)
		if err != nil {
			t.Fatal(err)
		}
		return ident.FormatPublicKey(k.Public().(ed25519.PublicKey))
	}
	certKey := func(path string) string {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil || c.Subject.CommonName != "vms" {
			t.Fatalf("certificate %v", err)
		}
		return ident.FormatPublicKey(c.PublicKey.(ed25519.PublicKey))
	}

	first := enroll()
	if st, err := os.Stat(first.KeyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v", err)
	}
	if first.PublicKey != pubOf(first.KeyFile) || first.PolicyLine != fmt.Sprintf("keys = [%q]", first.PublicKey) || certKey(first.CertFile) != first.PublicKey {
		t.Fatalf("enroll: %+v", first)
	}
	inv, _ := fileio.LoadInventory(r.inv)
	if c, ok := inv.Credential("vms"); !ok || inv.Path(c.KeyFile) != first.KeyFile || inv.Path(c.CertFile) != first.CertFile {
		t.Fatalf("inventory credentials %+v", inv.Credentials)
	}
	if code, _, _ := r.run(t, "principal", "enroll", "vms"); code != ExitUsage {
		t.Fatalf("re-enroll without --force: exit %d", code)
	}

	// Rotation.
	next := enroll("--next")
	if pubOf(first.KeyFile) != first.PublicKey {
		t.Fatal("--next replaced the current key")
	}
	if next.PolicyLine != fmt.Sprintf("keys = [%q, %q]", first.PublicKey, next.PublicKey) {
		t.Fatalf("rotation policy line %q", next.PolicyLine)
	}
	code, out, errs := r.run(t, "principal", "activate", "vms")
	if code != 0 || !strings.Contains(out, fmt.Sprintf("keys = [%q]", next.PublicKey)) {
		t.Fatalf("activate: %d %s %s", code, out, errs)
	}
	if pubOf(first.KeyFile) != next.PublicKey || certKey(first.CertFile) != next.PublicKey {
		t.Fatal("activate did not switch key and certificate")
	}
	if _, err := os.Stat(first.KeyFile + ".next"); !os.IsNotExist(err) {
		t.Fatalf("next key left behind: %v", err)
	}
	if code, _, _ := r.run(t, "principal", "activate", "vms"); code != ExitUsage {
		t.Fatalf("activate without a next key: exit %d", code)
	}

	// Host and operator enrollment create the signing keys they need.
	code, out, _ = r.run(t, "enroll", "h1")
	if code != 0 || !strings.Contains(out, "principal ops:") || !strings.Contains(out, "keys = [\"ed25519:") {
		t.Fatalf("enroll h1: %d %s", code, out)
	}
	code, out, _ = r.run(t, "user", "enroll", "bob")
	if code != 0 || !strings.Contains(out, "principal bob:") {
		t.Fatalf("user enroll: %d %s", code, out)
	}
	inv, _ = fileio.LoadInventory(r.inv)
	for _, p := range []string{"vms", "ops", "bob"} {
		if c, ok := inv.Credential(p); !ok {
			t.Fatalf("no credential for %s", p)
		} else if _, err := ident.LoadPrivateKey(inv.Path(c.KeyFile)); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
	}
}

func TestOOBTransportFlag(t *testing.T) {
	r := newRig(t)
	code, _, errs := r.run(t, "--oob-transport", "pigeon", "vm", "list", "h1")
	if code != 2 || !strings.Contains(errs, "want ipmi or redfish") {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if code, out, _ := r.run(t, "--oob-transport", "redfish", "vm", "list", "h1"); code != 0 || !strings.Contains(out, "web1") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}
