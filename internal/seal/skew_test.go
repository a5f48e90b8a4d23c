package seal

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/ooblab/ooblab/internal/testutil"
	"github.com/ooblab/ooblab/internal/vmsg"
)

// TestOpenSkewed: an envelope from a sender 312 s behind is stale for Open
// but opens with OpenSkewed (±20 steps), leaves no id in the replay window,
// and the answer sealed in its step opens on the sender's side. Beyond the
// range, tampered, or for another host, it does not open.
func TestOpenSkewed(t *testing.T) {
	k := testKey(t, "hv1")
	vmsNow := testNow.Add(-312 * time.Second)
	env, err := NewSealer(k).Seal(vmsg.KindRequest, 7, []byte("req"), vmsNow)
	if err != nil {
		t.Fatal(err)
	}
	host := NewOpener(k, OpenerOptions{})
	if _, _, err := host.Open(env, testNow); !errors.Is(err, ErrStale) {
		t.Fatalf("Open: %v, want ErrStale", err)
	}
	h, body, err := host.OpenSkewed(env, testNow, 20)
	if err != nil || string(body) != "req" || h.Step != k.Step(vmsNow) {
		t.Fatalf("OpenSkewed: %+v %q %v", h, body, err)
	}
	if host.Seen() != 0 {
		t.Fatalf("OpenSkewed took an id into the replay window (%d)", host.Seen())
	}
	ans, err := NewSealer(k).SealStep(vmsg.KindReply, 8, []byte("clock skew"), h.Step)
	if err != nil {
		t.Fatal(err)
	}
	if _, b, err := NewOpener(k, OpenerOptions{}).Open(ans, vmsNow); err != nil || string(b) != "clock skew" {
		t.Fatalf("the sender opens the answer: %q %v", b, err)
	}
	if _, _, err := host.OpenSkewed(env, testNow, 9); !errors.Is(err, ErrStale) { // 10 steps back
		t.Fatalf("±9 steps: %v, want ErrStale", err)
	}
	bad := append([]byte(nil), env...)
	bad[len(bad)-1] ^= 1
	if _, _, err := host.OpenSkewed(bad, testNow, 20); !errors.Is(err, ErrAuth) {
		t.Fatalf("tampered: %v, want ErrAuth", err)
	}
	if _, _, err := NewOpener(testKey(t, "hv2"), OpenerOptions{}).OpenSkewed(env, testNow, 20); !errors.Is(err, ErrHostMismatch) {
		t.Fatalf("other host: %v", err)
	}
	ahead, _ := NewSealer(k).Seal(vmsg.KindRequest, 9, []byte("req"), testNow.Add(312*time.Second))
	if _, _, err := host.OpenSkewed(ahead, testNow, 20); err != nil {
		t.Fatalf("sender ahead: %v", err)
	}
}

// FuzzOpenSkewed: OpenSkewed opens only genuine envelopes within its range,
// whose header re-encodes exactly, and never touches the replay window.
func FuzzOpenSkewed(f *testing.F) {
	for _, tt := range goldenEnvelopes {
		f.Add(testutil.Unhex(f, tt.want))
	}
	k := testKey(f, "hv1")
	back, _ := NewSealer(k).Seal(vmsg.KindRequest, 7, []byte("req"), testNow.Add(-312*time.Second))
	f.Add(back)
	f.Add([]byte("OB\x01\x01\xff"))
	o := NewOpener(k, OpenerOptions{})
	f.Fuzz(func(t *testing.T, env []byte) {
		h, body, err := o.OpenSkewed(env, testNow, 20)
		if o.Seen() != 0 {
			t.Fatal("OpenSkewed took an id into the replay window")
		}
		if err != nil {
			return
		}
		hdr := h.append(nil)
		if !bytes.Equal(hdr, env[:len(hdr)]) || len(env) != len(hdr)+NonceLen+len(body)+TagLen {
			t.Fatalf("opened inconsistent envelope % x", env)
		}
		if cur := k.Step(testNow); h.Step+20 < cur || h.Step > cur+20 {
			t.Fatalf("opened step %d at %d, beyond ±20", h.Step, cur)
		}
	})
}
