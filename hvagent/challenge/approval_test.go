package challenge

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"testing"
	"time"

	"github.com/ooblab/ooblab/internal/ident"
)

var opKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))

// approvalKeys: "auto" is answered by carol, who signs approvals.
func approvalKeys(principal string) (Answerer, bool) {
	if principal == "auto" {
		return Answerer{User: "carol", ApprovalKeys: []ed25519.PublicKey{opKey.Public().(ed25519.PublicKey)}}, true
	}
	return keys(principal)
}

// A signed approval answers the challenge it names; one for another host,
// VM, action, request or nonce, a tampered one, one signed by another key
// and a TOTP code are refused (and counted against the budget).
func TestApproval(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	other, _ := ident.GenerateKey()
	sign := func(k ed25519.PrivateKey, a ident.Approval) string {
		tok, err := ident.SignApproval(k, a)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	for _, tt := range []struct {
		name string
		tok  func(a ident.Approval) string
		ok   bool
	}{
		{"right", func(a ident.Approval) string { return sign(opKey, a) }, true},
		{"other host", func(a ident.Approval) string { a.HostID = "h2"; return sign(opKey, a) }, false},
		{"other vm", func(a ident.Approval) string { a.VM = "db2"; return sign(opKey, a) }, false},
		{"other action", func(a ident.Approval) string { a.Action = "destroy"; return sign(opKey, a) }, false},
		{"other request", func(a ident.Approval) string { a.RequestID = 2; return sign(opKey, a) }, false},
		{"other nonce", func(a ident.Approval) string { a.Nonce = make([]byte, 16); return sign(opKey, a) }, false},
		{"other key", func(a ident.Approval) string { return sign(other, a) }, false},
		{"tampered", func(a ident.Approval) string {
			b := []byte(sign(opKey, a))
			b[10] ^= 1
			return string(b)
		}, false},
		{"a code", func(ident.Approval) string { return AppCode(secret, now) }, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Config{Keys: approvalKeys, HostID: "h1"})
			ch := issue(t, c, 1, "auto", "start", "db1", now)
			a := ident.Approval{HostID: "h1", Principal: "auto", Action: "start", VM: "db1", RequestID: 1, Nonce: ch.Nonce[:]}
			err := c.Verify(1, "auto", "start", "db1", ch.Nonce, tt.tok(a), now)
			if tt.ok != (err == nil) || !tt.ok && !errors.Is(err, ErrBadCode) {
				t.Fatalf("err = %v, want ok %v", err, tt.ok)
			}
			if c.Outstanding() != 0 {
				t.Fatal("the challenge was not spent")
			}
		})
	}
	// Without a host id no approval is accepted.
	c := New(Config{Keys: approvalKeys})
	ch := issue(t, c, 1, "auto", "start", "db1", now)
	tok := sign(opKey, ident.Approval{HostID: "h1", Principal: "auto", Action: "start", VM: "db1", RequestID: 1, Nonce: ch.Nonce[:]})
	if err := c.Verify(1, "auto", "start", "db1", ch.Nonce, tok, now); !errors.Is(err, ErrBadCode) {
		t.Fatalf("no host id: %v", err)
	}
}

// An app code of group A is refused by a host of group B (which holds B's
// key), and spent on the host that took it.
func TestGroupCode(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	keyA, keyB := []byte("group-A-secret-bytes"), []byte("group-B-secret-bytes")
	host := func(k []byte) *Challenger {
		return New(Config{Keys: func(p string) (Answerer, bool) { return Answerer{User: "ops", Secret: k}, true }})
	}
	a, b := host(keyA), host(keyB)
	code := AppCode(keyA, now)
	ch := issue(t, b, 1, "vms", "start", "db1", now)
	if err := b.Verify(1, "vms", "start", "db1", ch.Nonce, code, now); !errors.Is(err, ErrBadCode) {
		t.Fatalf("group A's code on a group B host: %v", err)
	}
	ch = issue(t, a, 1, "vms", "start", "db1", now)
	if err := a.Verify(1, "vms", "start", "db1", ch.Nonce, code, now); err != nil {
		t.Fatalf("group A's code on a group A host: %v", err)
	}
	ch = issue(t, a, 2, "vms", "start", "db2", now)
	if err := a.Verify(2, "vms", "start", "db2", ch.Nonce, code, now); !errors.Is(err, ErrCodeReused) {
		t.Fatalf("the code again on the same host: %v", err)
	}
}
