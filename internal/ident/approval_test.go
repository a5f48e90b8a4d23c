package ident

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"

	"github.com/ooblab/ooblab/internal/testutil"
)

func testApproval() Approval {
	return Approval{HostID: "h1", Principal: "vms", Action: "start", VM: "db1", RequestID: 0x0102030405060708,
		Nonce: bytes.Repeat([]byte{0xAA}, 16)}
}

func TestApprovalMessageBytes(t *testing.T) {
	m, err := testApproval().Message()
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte("ooblab/approval/v1\x00\x02h1\x03vms\x05start\x03db1"),
		testutil.Unhex(t, "01 02 03 04 05 06 07 08 aa aa aa aa aa aa aa aa aa aa aa aa aa aa aa aa")...)
	if !bytes.Equal(m, want) {
		t.Fatalf("message % x\nwant    % x", m, want)
	}
}

// An approval is good for the challenge it names only: the same token for
// another host, VM, action, principal, request or nonce is refused, as is
// a token with one bit flipped or signed by another key.
func TestApprovalBinding(t *testing.T) {
	priv := fixedKey()
	other, _ := GenerateKey()
	pub := priv.Public().(ed25519.PublicKey)
	opub := other.Public().(ed25519.PublicKey)
	a := testApproval()
	tok, err := SignApproval(priv, a)
	if err != nil {
		t.Fatal(err)
	}
	if !IsApprovalToken(tok) || len(tok) != len(ApprovalPrefix)+86 {
		t.Fatalf("token %q", tok)
	}
	if i, err := VerifyApproval([]ed25519.PublicKey{opub, pub}, a, tok); err != nil || i != 1 {
		t.Fatalf("good token: %d %v", i, err)
	}
	flip := []byte(tok)
	flip[len(flip)-3] ^= 0x01
	for _, tt := range []struct {
		name  string
		keys  []ed25519.PublicKey
		edit  func(*Approval)
		token string
	}{
		{"other host", []ed25519.PublicKey{pub}, func(a *Approval) { a.HostID = "h2" }, tok},
		{"other vm", []ed25519.PublicKey{pub}, func(a *Approval) { a.VM = "db2" }, tok},
		{"other action", []ed25519.PublicKey{pub}, func(a *Approval) { a.Action = "destroy" }, tok},
		{"other principal", []ed25519.PublicKey{pub}, func(a *Approval) { a.Principal = "intern" }, tok},
		{"other request", []ed25519.PublicKey{pub}, func(a *Approval) { a.RequestID++ }, tok},
		{"other nonce", []ed25519.PublicKey{pub}, func(a *Approval) { a.Nonce = bytes.Repeat([]byte{0xAB}, 16) }, tok},
		{"tampered token", []ed25519.PublicKey{pub}, func(*Approval) {}, string(flip)},
		{"other key", []ed25519.PublicKey{opub}, func(*Approval) {}, tok},
		{"no prefix", []ed25519.PublicKey{pub}, func(*Approval) {}, strings.TrimPrefix(tok, ApprovalPrefix)},
		{"short", []ed25519.PublicKey{pub}, func(*Approval) {}, tok[:40]},
		{"a TOTP code", []ed25519.PublicKey{pub}, func(*Approval) {}, "123456"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := testApproval()
			tt.edit(&b)
			if _, err := VerifyApproval(tt.keys, b, tt.token); !errors.Is(err, ErrBadApproval) {
				t.Fatalf("err %v, want ErrBadApproval", err)
			}
		})
	}
	if _, err := VerifyApproval(nil, a, tok); !errors.Is(err, ErrNoKey) {
		t.Fatalf("no keys: %v", err)
	}
}

// FuzzVerifyApproval: a token is outside bytes (the VMS relays it).
func FuzzVerifyApproval(f *testing.F) {
	priv := fixedKey()
	pub := priv.Public().(ed25519.PublicKey)
	a := testApproval()
	tok, _ := SignApproval(priv, a)
	f.Add(tok)
	f.Add("ap1.")
	f.Add("123456")
	f.Fuzz(func(t *testing.T, s string) {
		_, err := VerifyApproval([]ed25519.PublicKey{pub}, a, s)
		if err == nil && s != tok { // strict base64: one text per signature
			t.Fatalf("token %q accepted", s)
		}
	})
}

// BenchmarkVerifyApproval: what a host spends on one approval answer.
func BenchmarkVerifyApproval(b *testing.B) {
	priv := fixedKey()
	keys := []ed25519.PublicKey{priv.Public().(ed25519.PublicKey)}
	a := testApproval()
	tok, _ := SignApproval(priv, a)
	for b.Loop() {
		if _, err := VerifyApproval(keys, a, tok); err != nil {
			b.Fatal(err)
		}
	}
}
