package agent

import (
	"bytes"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pquerna/otp/totp"

	"github.com/ooblab/ooblab/hvagent/agenttest"
	"github.com/ooblab/ooblab/hvagent/policy"
	"github.com/ooblab/ooblab/internal/ident"
	"github.com/ooblab/ooblab/internal/vmsg"
)

// groupB32 is the operator's key for host group "a" ("other" in the
// tests below); alice's key (AliceB32) is group "b"'s, hv1's group.
const groupB32 = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"

var carolKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize))

// groupPolicy puts hv1 in group b; alice has one key per group; principal
// auto's user carol answers with approvals.
func groupPolicy(t *testing.T) *policy.Policy {
	t.Helper()
	dir := t.TempDir()
	for name, b32 := range map[string]string{"alice@a.totp": groupB32, "alice@b.totp": aliceB32} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(b32+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	text := `read_only_default = true
protected = ["db-*"]
[groups]
a = ["hv2", "hv3"]
b = ["hv1"]
[users.alice]
totp_group_files = { a = "alice@a.totp", b = "alice@b.totp" }
[users.carol]
approval_keys = ["` + ident.FormatPublicKey(carolKey.Public().(ed25519.PublicKey)) + `"]
[principals.vms1]
user = "alice"
` + agenttest.KeysLine("vms1") + `
[[principals.vms1.rules]]
actions = ["*"]
vms = ["*"]
[principals.monitor]
user = "carol"
` + agenttest.KeysLine("monitor") + `
[[principals.monitor.rules]]
actions = ["*"]
vms = ["*"]
`
	p, err := policy.ParseFor([]byte(text), dir, "hv1")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// An app code for host group a is refused on hv1, a host of group b, and
// the group b code is accepted.
func TestGroupCodeRefusedOutsideGroup(t *testing.T) {
	b := newBench(t)
	b.a.SetPolicy(groupPolicy(t))
	now := b.clk.Now()
	codeA, _ := totp.GenerateCode(groupB32, now)
	codeB, _ := totp.GenerateCode(aliceB32, now)
	if codeA == codeB {
		t.Skip("the two groups' codes collide this step (one in a million)")
	}
	r := req("vms1", vmsg.CmdStart, "db-1")
	c := b.challenge(r)
	r.Answer = &vmsg.ChallengeAnswer{Nonce: c.Nonce, Code: codeA}
	if rep, _ := b.do(r, ViaOOB)[0].(*vmsg.Reply); rep == nil || rep.Code != vmsg.ErrChallengeNo || b.hv.starts.Load() != 0 {
		t.Fatalf("group a's code on a group b host: %+v", rep)
	}
	r2 := req("vms1", vmsg.CmdStart, "db-1")
	c2 := b.challenge(r2)
	r2.Answer = &vmsg.ChallengeAnswer{Nonce: c2.Nonce, Code: codeB}
	if rep := b.reply(r2); !rep.OK || b.hv.starts.Load() != 1 {
		t.Fatalf("group b's code on a group b host: %+v", rep)
	}
}

// An approval signed by the operator's key for this host, request, action
// and VM runs the request; one for another host or VM is refused.
func TestApprovalAnswer(t *testing.T) {
	b := newBench(t)
	b.a.SetPolicy(groupPolicy(t))
	for _, tt := range []struct {
		name, host, vm string
		ok             bool
	}{
		{"other host", "hv2", "db-1", false},
		{"other vm", "hv1", "db-2", false},
		{"right", "hv1", "db-1", true},
	} {
		r := req("monitor", vmsg.CmdStart, "db-1")
		c := b.challenge(r)
		tok, err := ident.SignApproval(carolKey, ident.Approval{HostID: tt.host, Principal: "monitor", Action: "start", VM: tt.vm, RequestID: r.ID, Nonce: c.Nonce})
		if err != nil {
			t.Fatal(err)
		}
		r.Answer = &vmsg.ChallengeAnswer{Nonce: c.Nonce, Code: tok}
		rep, _ := b.do(r, ViaOOB)[0].(*vmsg.Reply)
		if rep == nil || rep.OK != tt.ok || !tt.ok && (rep.Code != vmsg.ErrChallengeNo || !strings.Contains(rep.Error, "approval")) {
			t.Fatalf("%s: %+v", tt.name, rep)
		}
	}
	if b.hv.starts.Load() != 1 {
		t.Fatalf("%d starts, want 1", b.hv.starts.Load())
	}
}
