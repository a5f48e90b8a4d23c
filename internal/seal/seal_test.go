package seal

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/ooblab/ooblab/internal/testutil"
	"github.com/ooblab/ooblab/internal/vmsg"
)

// zeroReader makes nonces deterministic for golden envelopes. The expected
// ciphertexts were checked against Python's cryptography (HKDF + AESGCM).
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

var (
	testSecret = []byte("0123456789abcdef0123456789abcdef")
	testNow    = time.Unix(1_700_000_000, 0) // step 56666666
)

func testKey(t testing.TB, host string) *Key {
	t.Helper()
	k, err := NewKey(host, testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func goldenSealer(t testing.TB) *Sealer {
	s := NewSealer(testKey(t, "hv1"))
	s.rand = zeroReader{}
	return s
}

var goldenEnvelopes = []struct {
	name  string
	kind  vmsg.Kind
	msgID uint64
	body  string
	want  string
}{
	{"ping request", vmsg.KindRequest, 1, "a2 01 01 02 01",
		"4f 42 01 01 03 68 76 31 00 00 00 00 03 60 aa 2a 00 00 00 00 00 00 00 01 " +
			"00 00 00 00 00 00 00 00 00 00 00 00 a2 cb 9c 8d 11 ba f6 a8 04 61 53 7e e5 09 d5 66 4c c7 b5 9c 84"},
	{"empty alert", vmsg.KindAlert, 0xfedcba9876543210, "",
		"4f 42 01 04 03 68 76 31 00 00 00 00 03 60 aa 2a fe dc ba 98 76 54 32 10 " +
			"00 00 00 00 00 00 00 00 00 00 00 00 d0 93 23 08 8b e7 7b 47 59 33 9c c7 24 32 87 f6"},
}

func TestGoldenEnvelope(t *testing.T) {
	for _, tt := range goldenEnvelopes {
		t.Run(tt.name, func(t *testing.T) {
			env, err := goldenSealer(t).Seal(tt.kind, tt.msgID, testutil.Unhex(t, tt.body), testNow)
			if err != nil {
				t.Fatal(err)
			}
			if want := testutil.Unhex(t, tt.want); !bytes.Equal(env, want) {
				t.Fatalf("Seal = % x\nwant   % x", env, want)
			}
			h, body, err := NewOpener(testKey(t, "hv1"), OpenerOptions{}).Open(env, testNow)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(body, testutil.Unhex(t, tt.body)) || h.Kind != tt.kind || h.MsgID != tt.msgID || h.HostID != "hv1" || h.Step != 56666666 {
				t.Fatalf("Open = %+v % x", h, body)
			}
		})
	}
}

func TestKey(t *testing.T) {
	k, err := Enroll("hv-1.lab")
	if err != nil {
		t.Fatal(err)
	}
	if len(k.Secret()) != SecretSize || k.Period() != 30*time.Second || k.HostID() != "hv-1.lab" {
		t.Fatalf("key %v", k)
	}
	if !strings.HasPrefix(k.URI(), "otpauth://totp/ooblab:hv-1.lab?") {
		t.Fatalf("uri %s", k.URI())
	}
	k2, err := ParseKey(k.URI())
	if err != nil || !bytes.Equal(k2.Secret(), k.Secret()) || k2.HostID() != k.HostID() {
		t.Fatalf("ParseKey: %v", err)
	}
	for _, s := range []string{k.String(), fmt.Sprint(k), k.LogValue().String()} {
		if strings.Contains(s, otpSecret(k)) || !strings.Contains(s, "REDACTED") {
			t.Fatalf("secret leaks: %s", s)
		}
	}
	png, err := k.PNG(200)
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("PNG: %v", err)
	}
	for _, bad := range []string{"", "a b", "x:y", strings.Repeat("h", 65)} {
		if _, err := Enroll(bad); !errors.Is(err, ErrKey) {
			t.Fatalf("Enroll(%q) = %v", bad, err)
		}
	}
	for _, bad := range []string{"otpauth://hotp/ooblab:h?secret=AAAA", "otpauth://totp/ooblab:h?secret=!!", "%zz"} {
		if _, err := ParseKey(bad); !errors.Is(err, ErrKey) {
			t.Fatalf("ParseKey(%q) = %v", bad, err)
		}
	}
	if sec, err := DecodeSecret("gezdgnbvgy3tqojq"); err != nil || string(sec) != "1234567890" {
		t.Fatalf("DecodeSecret: %q %v", sec, err)
	}
}

func otpSecret(k *Key) string { return k.k.Secret() }

func TestOpenWindow(t *testing.T) {
	k := testKey(t, "hv1")
	s := NewSealer(k)
	for d, want := range map[time.Duration]error{
		-60 * time.Second: ErrStale, -30 * time.Second: nil, 0: nil, 30 * time.Second: nil, 60 * time.Second: ErrStale,
	} {
		env, err := s.Seal(vmsg.KindRequest, 7, []byte("x"), testNow.Add(d))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := NewOpener(k, OpenerOptions{}).Open(env, testNow); !errors.Is(err, want) {
			t.Fatalf("sender offset %v: %v, want %v", d, err, want)
		}
	}
}

func TestOpenRejects(t *testing.T) {
	k := testKey(t, "hv1")
	env, err := NewSealer(k).Seal(vmsg.KindRequest, 9, []byte("hello body"), testNow)
	if err != nil {
		t.Fatal(err)
	}
	open := func(e []byte) error {
		_, _, err := NewOpener(k, OpenerOptions{}).Open(e, testNow)
		return err
	}
	// Every single-bit flip anywhere is refused.
	for i := range env {
		bad := bytes.Clone(env)
		bad[i] ^= 0x01
		if err := open(bad); err == nil {
			t.Fatalf("flip at %d accepted", i)
		}
	}
	// Every truncation is refused.
	for n := range len(env) {
		err := open(env[:n])
		if err == nil {
			t.Fatalf("truncation to %d accepted", n)
		}
		if n < minHeader+3 && !errors.Is(err, ErrTruncated) {
			t.Fatalf("truncation to %d: %v", n, err)
		}
	}
	// Specific errors.
	other := testKey(t, "hv2")
	if _, _, err := NewOpener(other, OpenerOptions{}).Open(env, testNow); !errors.Is(err, ErrHostMismatch) {
		t.Fatalf("host: %v", err)
	}
	wrongSecret, _ := NewKey("hv1", []byte("another secret of 32 bytes......"))
	if _, _, err := NewOpener(wrongSecret, OpenerOptions{}).Open(env, testNow); !errors.Is(err, ErrAuth) {
		t.Fatalf("secret: %v", err)
	}
	// Claim the next step in the header: wrong key and wrong AD.
	bad := bytes.Clone(env)
	bad[5+3+7]++
	if err := open(bad); !errors.Is(err, ErrAuth) {
		t.Fatalf("step: %v", err)
	}
	bad = bytes.Clone(env)
	bad[len(bad)-1] ^= 0x80
	if err := open(bad); !errors.Is(err, ErrAuth) {
		t.Fatalf("tag: %v", err)
	}
	bad = bytes.Clone(env)
	bad[3] = 9
	if err := open(bad); !errors.Is(err, ErrHeader) {
		t.Fatalf("kind: %v", err)
	}
	if _, err := NewSealer(k).Seal(0, 1, nil, testNow); !errors.Is(err, ErrHeader) {
		t.Fatalf("seal kind 0: %v", err)
	}
}

func TestReplay(t *testing.T) {
	k := testKey(t, "hv1")
	s, o := NewSealer(k), NewOpener(k, OpenerOptions{MaxSeen: 3})
	env, _ := s.Seal(vmsg.KindRequest, 1, nil, testNow)
	if _, _, err := o.Open(env, testNow); err != nil {
		t.Fatal(err)
	}
	for _, d := range []time.Duration{0, 30 * time.Second} {
		if _, _, err := o.Open(env, testNow.Add(d)); !errors.Is(err, ErrReplay) {
			t.Fatalf("replay after %v: %v", d, err)
		}
	}
	if _, _, err := o.Open(env, testNow.Add(60*time.Second)); !errors.Is(err, ErrStale) {
		t.Fatalf("late replay: %v", err)
	}
	// Same id sealed again (new nonce) is still a replay.
	env2, _ := s.Seal(vmsg.KindRequest, 1, nil, testNow)
	if _, _, err := o.Open(env2, testNow); !errors.Is(err, ErrReplay) {
		t.Fatalf("resealed: %v", err)
	}
	for id := uint64(2); id <= 3; id++ {
		e, _ := s.Seal(vmsg.KindRequest, id, nil, testNow)
		if _, _, err := o.Open(e, testNow); err != nil {
			t.Fatal(err)
		}
	}
	e, _ := s.Seal(vmsg.KindRequest, 4, nil, testNow)
	if _, _, err := o.Open(e, testNow); !errors.Is(err, ErrWindowFull) {
		t.Fatalf("full: %v", err)
	}
	// Two steps later everything has aged out of the window.
	later := testNow.Add(90 * time.Second)
	e, _ = s.Seal(vmsg.KindRequest, 4, nil, later)
	if _, _, err := o.Open(e, later); err != nil || o.Seen() != 1 {
		t.Fatalf("after window: %v seen=%d", err, o.Seen())
	}
}

func TestChallengeCode(t *testing.T) {
	// RFC 6238 appendix B, SHA1, truncated to 6 digits: T=59 → 94287082.
	rfc := []byte("12345678901234567890")
	if got := ChallengeCode(rfc, nil, time.Unix(59, 0)); got != "287082" {
		t.Fatalf("RFC 6238 vector: %s", got)
	}
	// Empty nonce equals pquerna's TOTP.
	k := testKey(t, "u")
	want, err := totp.GenerateCodeCustom(otpSecret(k), testNow, totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil || ChallengeCode(k.Secret(), nil, testNow) != want {
		t.Fatalf("vs pquerna: %s %v", want, err)
	}
	nonce := bytes.Repeat([]byte{7}, 16)
	code := ChallengeCode(testSecret, nonce, testNow)
	if code == ChallengeCode(testSecret, nil, testNow) {
		t.Fatal("code not bound to nonce")
	}
	for d, ok := range map[time.Duration]bool{-60 * time.Second: false, -30 * time.Second: true, 0: true, 30 * time.Second: true, 60 * time.Second: false} {
		if _, got := VerifyChallengeCode(testSecret, nonce, code, testNow.Add(d)); got != ok {
			t.Fatalf("verify at %v = %v", d, got)
		}
	}
	if _, ok := VerifyChallengeCode(testSecret, bytes.Repeat([]byte{8}, 16), code, testNow); ok {
		t.Fatal("other nonce accepted")
	}
	if _, ok := (ChallengeVerifier{}).Verify(testSecret, nonce, code[:5], testNow); ok {
		t.Fatal("short code accepted")
	}
}

func FuzzOpen(f *testing.F) {
	for _, tt := range goldenEnvelopes {
		f.Add(testutil.Unhex(f, tt.want))
	}
	f.Add([]byte("OB\x01\x01\xff"))
	k := testKey(f, "hv1")
	f.Fuzz(func(t *testing.T, env []byte) {
		h, body, err := NewOpener(k, OpenerOptions{}).Open(env, testNow)
		if err != nil {
			return
		}
		// Only a genuine envelope opens; its header must re-encode exactly.
		hdr := h.append(nil)
		if !bytes.Equal(hdr, env[:len(hdr)]) || len(env) != len(hdr)+NonceLen+len(body)+TagLen {
			t.Fatalf("opened inconsistent envelope % x", env)
		}
	})
}

func TestWriteCorpus(t *testing.T) {
	var seeds [][]byte
	for _, tt := range goldenEnvelopes {
		seeds = append(seeds, testutil.Unhex(t, tt.want))
	}
	testutil.WriteCorpus(t, "FuzzOpen", testutil.Seeds(append(seeds, []byte("OB\x01\x01\xff")))...)
}

// TestReplayClockBack: an id the window forgot at a later step must not
// open when a later Open's clock reads an earlier step (a caller that read
// time.Now before another took the lock, or a wall clock stepped back).
func TestReplayClockBack(t *testing.T) {
	k := testKey(t, "hv1")
	s, o := NewSealer(k), NewOpener(k, OpenerOptions{})
	env1, _ := s.Seal(vmsg.KindRequest, 1, nil, testNow)
	if _, _, err := o.Open(env1, testNow); err != nil {
		t.Fatal(err)
	}
	later := testNow.Add(60 * time.Second) // two steps: id 1 is pruned
	env2, _ := s.Seal(vmsg.KindRequest, 2, nil, later)
	if _, _, err := o.Open(env2, later); err != nil {
		t.Fatal(err)
	}
	if _, _, err := o.Open(env1, testNow.Add(30*time.Second)); !errors.Is(err, ErrStale) {
		t.Fatalf("replay with the clock one step back: %v, want ErrStale", err)
	}
	// A fresh id of that step still opens.
	env3, _ := s.Seal(vmsg.KindRequest, 3, nil, later.Add(-30*time.Second))
	if _, _, err := o.Open(env3, later.Add(-30*time.Second)); err != nil {
		t.Fatalf("fresh id one step back: %v", err)
	}
}
