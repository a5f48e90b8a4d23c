package cmd

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/ooblab/ooblab/internal/fileio"
	"github.com/ooblab/ooblab/internal/ident"
	"github.com/ooblab/ooblab/internal/seal"
	"github.com/ooblab/ooblab/internal/vmsg"
)

var fakeNonce = []byte("nonce-0123456789") // agent()'s challenge nonce

// A challenge answer never comes from argv: --otp is refused (exit 2,
// nothing sent with it); $VMSCTL_OTP and a 0600 --otp-file answer; a
// --otp-file others can read is refused with the mode and the fix.
func TestAnswerNotInArgv(t *testing.T) {
	r := newRig(t)
	code := func() string { return seal.ChallengeCode(r.opSecret, fakeNonce, time.Now()) }
	got, _, errs := r.run(t, "--otp", code(), "vm", "destroy", "h1", "db1")
	if got != ExitUsage || !strings.Contains(errs, "process list") || len(r.vmmi.Calls())+len(r.oob.Calls()) != 0 {
		t.Fatalf("--otp in argv: exit %d, %s", got, errs)
	}
	r.env = map[string]string{EnvOTP: code()}
	if got, _, errs := r.run(t, "vm", "destroy", "h1", "db1"); got != ExitOK {
		t.Fatalf("$VMSCTL_OTP: exit %d %s", got, errs)
	}
	r.env = nil
	f := filepath.Join(r.dir, "code")
	os.WriteFile(f, []byte(code()+"\n"), 0o600)
	if got, _, errs := r.run(t, "--otp-file", f, "vm", "destroy", "h1", "db1"); got != ExitOK {
		t.Fatalf("--otp-file: exit %d %s", got, errs)
	}
	os.Chmod(f, 0o644)
	if got, _, errs := r.run(t, "--otp-file", f, "vm", "destroy", "h1", "db1"); got != ExitChallenge || !strings.Contains(errs, "mode 0644") || !strings.Contains(errs, "chmod 600") {
		t.Fatalf("0644 --otp-file: exit %d %s", got, errs)
	}
	// The operator key (--otp-secret-file) is checked the same way.
	os.Chmod(r.opFile, 0o640)
	if got, _, errs := r.run(t, "--otp-secret-file", r.opFile, "vm", "destroy", "h1", "db1"); got != ExitChallenge || !strings.Contains(errs, "mode 0640") {
		t.Fatalf("0640 operator key: exit %d %s", got, errs)
	}
}

// Approval mode end to end on the command line: 'user enroll --approval'
// makes the key and the policy line; 'approve' prints a token for one
// challenge; --approval-key signs it in place; the fake host checks the
// token against the public key only, and refuses one for another VM.
func TestApproveCommand(t *testing.T) {
	r := newRig(t)
	code, out, errs := r.run(t, "user", "enroll", "carol", "--approval")
	if code != 0 || !strings.Contains(out, "approval_keys = [\"ed25519:") {
		t.Fatalf("user enroll --approval: %d %s %s", code, out, errs)
	}
	keyFile := filepath.Join(r.dir, "approval-carol.key")
	priv, err := ident.LoadPrivateKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pub := []ed25519.PublicKey{priv.Public().(ed25519.PublicKey)}
	host := func(ctx context.Context, h string, req *vmsg.Request) (vmsg.Message, error) {
		if req.Answer == nil {
			return &vmsg.Challenge{RequestID: req.ID, Nonce: fakeNonce, VM: req.VM, Command: req.Command, ExpiresMs: time.Now().Add(time.Minute).UnixMilli()}, nil
		}
		ap := ident.Approval{HostID: "hv1", Principal: req.Principal, Action: req.Command.String(), VM: req.VM, RequestID: req.ID, Nonce: req.Answer.Nonce}
		if _, err := ident.VerifyApproval(pub, ap, req.Answer.Code); err != nil {
			return &vmsg.Reply{RequestID: req.ID, Code: vmsg.ErrChallengeNo, Error: err.Error()}, nil
		}
		return &vmsg.Reply{RequestID: req.ID, OK: true}, nil
	}
	r.vmmi.Handle, r.oob.Handle = host, host
	if code, _, errs := r.run(t, "--approval-key", keyFile, "vm", "start", "h1", "db1"); code != ExitOK {
		t.Fatalf("--approval-key: %d %s", code, errs)
	}
	// 'approve' with the arguments the prompt prints.
	nonce := hex.EncodeToString(fakeNonce)
	code, tok, errs := r.run(t, "approve", "--key", keyFile, "hv1", "ops", "start", "db1", "77", nonce)
	tok = strings.TrimSpace(tok)
	ap := ident.Approval{HostID: "hv1", Principal: "ops", Action: "start", VM: "db1", RequestID: 77, Nonce: fakeNonce}
	if _, err := ident.VerifyApproval(pub, ap, tok); code != 0 || err != nil {
		t.Fatalf("approve: %d %q %s %v", code, tok, errs, err)
	}
	ap.VM = "db2"
	if _, err := ident.VerifyApproval(pub, ap, tok); err == nil {
		t.Fatal("an approval for db1 passed for db2")
	}
	for _, args := range [][]string{
		{"approve", "hv1", "ops", "start", "db1", "77", nonce},                    // no key
		{"approve", "--key", keyFile, "hv1", "ops", "nuke", "db1", "77", nonce},   // unknown action
		{"approve", "--key", keyFile, "hv1", "ops", "start", "db1", "x", nonce},   // request id
		{"approve", "--key", keyFile, "hv1", "ops", "start", "db1", "77", "00"},   // short nonce
		{"approve", "--key", keyFile, "../h", "ops", "start", "db1", "77", nonce}, // host id
	} {
		if code, _, _ := r.run(t, args...); code != ExitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, ExitUsage)
		}
	}
}

// The QR PNG holds the secret: written 0600 over an existing 0644 file,
// and a symbolic link at its path is replaced, not followed.
func TestQRWriteNoFollow(t *testing.T) {
	r := newRig(t)
	target := filepath.Join(r.dir, "elsewhere")
	os.WriteFile(target, []byte("keep me"), 0o644)
	link := filepath.Join(r.dir, "h1.png")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := r.run(t, "enroll", "h1", "--qr", link); code != 0 {
		t.Fatalf("enroll: %d %s %s", code, out, errs)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep me" {
		t.Fatalf("the QR write followed the link: the target now holds %d bytes", len(b))
	}
	st, err := os.Lstat(link)
	if err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != 0o600 {
		t.Fatalf("QR file: %v %v", st.Mode(), err)
	}
	old := filepath.Join(r.dir, "bob.png")
	os.WriteFile(old, []byte("old"), 0o644)
	if code, _, errs := r.run(t, "user", "enroll", "bob", "--qr", old); code != 0 {
		t.Fatalf("user enroll: %d %s", code, errs)
	}
	if st, _ := os.Stat(old); st.Mode().Perm() != 0o600 {
		t.Fatalf("existing QR file kept mode %v", st.Mode())
	}
	// A replaced key (--force) does not follow a link either.
	h1key := filepath.Join(r.dir, "h1.key")
	os.Remove(h1key)
	os.Symlink(target, h1key)
	if code, _, errs := r.run(t, "enroll", "h1", "--force"); code != 0 {
		t.Fatalf("enroll --force: %d %s", code, errs)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep me" {
		t.Fatalf("the key write followed the link: the target now holds %d bytes", len(b))
	}
}

// Names that become file names are checked first: nothing is written
// outside the inventory's folder.
func TestNamesBecomePathsChecked(t *testing.T) {
	r := newRig(t)
	for _, args := range [][]string{
		{"principal", "enroll", "../x"},
		{"principal", "enroll", "a/b"},
		{"principal", "enroll", ".hidden"},
		{"principal", "activate", "../x"},
		{"user", "enroll", "../x"},
		{"user", "enroll", "bob", "--group", "../x"},
		{"user", "enroll", "../x", "--approval"},
	} {
		if code, _, errs := r.run(t, args...); code != ExitUsage || !strings.Contains(errs, "bad name") {
			t.Errorf("%v: exit %d %s", args, code, errs)
		}
	}
	ents, _ := os.ReadDir(filepath.Dir(r.dir))
	for _, e := range ents {
		if strings.Contains(e.Name(), "x.key") || e.Name() == "principal-" {
			t.Errorf("written outside the inventory folder: %s", e.Name())
		}
	}
	if inv, _ := fileio.LoadInventory(r.inv); len(inv.Credentials) != 0 || len(inv.Operators) != 0 {
		t.Fatalf("inventory changed: %+v %+v", inv.Credentials, inv.Operators)
	}
}

// 'user enroll NAME --group G' makes a key for one host group, labelled
// NAME@G, and 'user code NAME --group G' prints its code.
func TestUserGroupKey(t *testing.T) {
	r := newRig(t)
	code, out, errs := r.run(t, "user", "enroll", "ops", "--group", "prod")
	if code != 0 {
		t.Fatalf("%d %s", code, errs)
	}
	uri := out[strings.Index(out, "otpauth://"):]
	uri = uri[:strings.IndexByte(uri, '\n')]
	k, err := otp.NewKeyFromURL(uri)
	if err != nil || k.Issuer() != "ooblab" || k.AccountName() != "ops@prod" {
		t.Fatalf("group key %v %v", k, err)
	}
	if png, err := os.ReadFile(filepath.Join(r.dir, "operator-ops@prod.png")); err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("QR: %v", err)
	}
	want, _ := totp.GenerateCode(k.Secret(), time.Now())
	code, out, errs = r.run(t, "user", "code", "ops", "--group", "prod")
	next, _ := totp.GenerateCode(k.Secret(), time.Now())
	if got := strings.TrimSpace(out); code != 0 || got != want && got != next {
		t.Fatalf("user code --group: %d %q %s, want %s", code, out, errs, want)
	}
	if code, _, _ := r.run(t, "user", "code", "ops", "--group", "lab"); code != ExitUsage {
		t.Fatalf("no key for group lab: exit %d", code)
	}
}
