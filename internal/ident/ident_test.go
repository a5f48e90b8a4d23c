package ident

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ooblab/ooblab/internal/testutil"
	"github.com/ooblab/ooblab/internal/vmsg"
)

// fixedKey is a deterministic key so the golden bytes below stay put.
func fixedKey() ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x42}, ed25519.SeedSize))
}

func TestMessageBytes(t *testing.T) {
	req := &vmsg.Request{ID: 1, Command: vmsg.CmdPing, Principal: "vms", IssuedMs: 2}
	sb, err := req.SignedBytes()
	if err != nil {
		t.Fatal(err)
	}
	// CBOR map {1: 1, 2: 1, 7: "vms", 8: 2}.
	if want := testutil.Unhex(t, "a4 01 01 02 01 07 63 76 6d 73 08 02"); !bytes.Equal(sb, want) {
		t.Fatalf("signed bytes % x, want % x", sb, want)
	}
	m, err := Message("h1", sb)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte("ooblab/request-sig/v1\x00\x02h1"), sb...)
	if !bytes.Equal(m, want) {
		t.Fatalf("message % x, want % x", m, want)
	}
	// A set signature is not part of what is signed.
	req.Sig = bytes.Repeat([]byte{1}, 64)
	sb2, _ := req.SignedBytes()
	if !bytes.Equal(sb, sb2) {
		t.Fatal("Sig changed the signed bytes")
	}
}

func TestSignVerify(t *testing.T) {
	priv := fixedKey()
	other, _ := GenerateKey()
	pub := priv.Public().(ed25519.PublicKey)
	opub := other.Public().(ed25519.PublicKey)
	signed := func() *vmsg.Request {
		r := &vmsg.Request{ID: 7, Command: vmsg.CmdStart, VM: "web1", Principal: "vms", IssuedMs: 1700000000000}
		if err := SignRequest(priv, "h1", r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	for _, tt := range []struct {
		name   string
		keys   []ed25519.PublicKey
		host   string
		mutate func(r *vmsg.Request)
		want   error
		idx    int
	}{
		{name: "good", keys: []ed25519.PublicKey{pub}, host: "h1", idx: 0},
		{name: "rotation: second key", keys: []ed25519.PublicKey{opub, pub}, host: "h1", idx: 1},
		{name: "no key registered", host: "h1", want: ErrNoKey},
		{name: "someone else's key", keys: []ed25519.PublicKey{opub}, host: "h1", want: ErrBadSignature},
		{name: "other host", keys: []ed25519.PublicKey{pub}, host: "h2", want: ErrBadSignature},
		{name: "principal changed", keys: []ed25519.PublicKey{pub}, host: "h1", mutate: func(r *vmsg.Request) { r.Principal = "ops" }, want: ErrBadSignature},
		{name: "vm changed", keys: []ed25519.PublicKey{pub}, host: "h1", mutate: func(r *vmsg.Request) { r.VM = "db1" }, want: ErrBadSignature},
		{name: "id changed", keys: []ed25519.PublicKey{pub}, host: "h1", mutate: func(r *vmsg.Request) { r.ID++ }, want: ErrBadSignature},
		{name: "time changed", keys: []ed25519.PublicKey{pub}, host: "h1", mutate: func(r *vmsg.Request) { r.IssuedMs++ }, want: ErrBadSignature},
		{name: "answer added", keys: []ed25519.PublicKey{pub}, host: "h1", mutate: func(r *vmsg.Request) {
			r.Answer = &vmsg.ChallengeAnswer{Nonce: make([]byte, vmsg.NonceLen), Code: "123456"}
		}, want: ErrBadSignature},
		{name: "unsigned", keys: []ed25519.PublicKey{pub}, host: "h1", mutate: func(r *vmsg.Request) { r.Sig = nil }, want: ErrNoSignature},
		{name: "short signature", keys: []ed25519.PublicKey{pub}, host: "h1", mutate: func(r *vmsg.Request) { r.Sig = r.Sig[:63] }, want: ErrBadSignature},
		{name: "flipped bit", keys: []ed25519.PublicKey{pub}, host: "h1", mutate: func(r *vmsg.Request) { r.Sig[10] ^= 1 }, want: ErrBadSignature},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := signed()
			if tt.mutate != nil {
				tt.mutate(r)
			}
			idx, err := VerifyRequest(tt.keys, tt.host, r)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err %v, want %v", err, tt.want)
			}
			if err == nil && idx != tt.idx {
				t.Fatalf("matched key %d, want %d", idx, tt.idx)
			}
		})
	}
	// The signature survives the wire: encode, decode, verify.
	r := signed()
	_, body, err := vmsg.Encode(r)
	if err != nil {
		t.Fatal(err)
	}
	back, err := vmsg.DecodeRequest(body)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyRequest([]ed25519.PublicKey{pub}, "h1", back); err != nil {
		t.Fatalf("after a round trip: %v", err)
	}
}

var publicKeyCases = []struct {
	in   string
	good bool
}{
	{"ed25519:" + strings.Repeat("A", 43) + "=", true},
	{"  ed25519:" + strings.Repeat("A", 43) + "=\n", true},
	{"ed25519:" + strings.Repeat("A", 44), false}, // 33 bytes
	{"ed25519:" + strings.Repeat("A", 42) + "==", false},
	{"ssh-ed25519 AAAA", false},
	{"ed25519:not base64!", false},
	{"", false},
}

func TestParsePublicKey(t *testing.T) {
	for _, tt := range publicKeyCases {
		k, err := ParsePublicKey(tt.in)
		if (err == nil) != tt.good {
			t.Fatalf("%q: err %v, want good=%v", tt.in, err, tt.good)
		}
		if err == nil && FormatPublicKey(k) != strings.TrimSpace(tt.in) {
			t.Fatalf("%q: formats back as %q", tt.in, FormatPublicKey(k))
		}
	}
	pub := fixedKey().Public().(ed25519.PublicKey)
	back, err := ParsePublicKey(FormatPublicKey(pub))
	if err != nil || !back.Equal(pub) {
		t.Fatalf("round trip: %v", err)
	}
}

func TestPrivateKeyFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "vms.key")
	priv := fixedKey()
	if err := WritePrivateKey(p, priv, false); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %o", st.Mode().Perm())
	}
	if err := WritePrivateKey(p, priv, false); err == nil {
		t.Fatal("replaced an existing key without force")
	}
	back, err := LoadPrivateKey(p)
	if err != nil || !back.Equal(priv) {
		t.Fatalf("load: %v", err)
	}
	os.Chmod(p, 0o644)
	if _, err := LoadPrivateKey(p); err == nil {
		t.Fatal("loaded a world-readable key")
	}
	for _, bad := range privateKeySeeds(t)[1:] {
		if _, err := ParsePrivateKey(bad); !errors.Is(err, ErrKeyFormat) {
			t.Fatalf("%q: err %v", bad, err)
		}
	}
}

func privateKeySeeds(t testing.TB) [][]byte {
	good, err := MarshalPrivateKey(fixedKey())
	if err != nil {
		t.Fatal(err)
	}
	return [][]byte{
		good,
		[]byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"),
		[]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
		[]byte("not pem"),
		good[:len(good)/2],
	}
}

func FuzzParsePrivateKey(f *testing.F) {
	for _, s := range privateKeySeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := ParsePrivateKey(b)
		if err == nil && len(k) != ed25519.PrivateKeySize {
			t.Fatalf("key of %d bytes", len(k))
		}
	})
}

func FuzzParsePublicKey(f *testing.F) {
	for _, tt := range publicKeyCases {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParsePublicKey(s)
		if err == nil && len(k) != ed25519.PublicKeySize {
			t.Fatalf("key of %d bytes", len(k))
		}
	})
}

// FuzzVerifyRequest: a request body from the wire, decoded as the agent
// does, never panics the verifier and never verifies unless signed by the
// key (the only valid seed is the signed one; any other body must fail).
func FuzzVerifyRequest(f *testing.F) {
	priv := fixedKey()
	pub := []ed25519.PublicKey{priv.Public().(ed25519.PublicKey)}
	r := &vmsg.Request{ID: 7, Command: vmsg.CmdStart, VM: "web1", Principal: "vms", IssuedMs: 1700000000000}
	if err := SignRequest(priv, "h1", r); err != nil {
		f.Fatal(err)
	}
	_, good, _ := vmsg.Encode(r)
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add([]byte{0xa0})
	f.Add(testutil.Unhex(f, "a4 01 01 02 01 07 63 76 6d 73 08 02"))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := vmsg.DecodeRequest(body)
		if err != nil {
			return
		}
		if _, err := VerifyRequest(pub, "h1", req); err == nil {
			// Only a body carrying the very fields that were signed verifies.
			if req.ID != 7 || req.VM != "web1" || req.Principal != "vms" || req.Command != vmsg.CmdStart || req.IssuedMs != 1700000000000 || req.Answer != nil || len(req.Metadata) != 0 {
				t.Fatalf("verified a request that was not signed: %+v", req)
			}
		}
	})
}
