package seal

import (
	"errors"
	"testing"
	"time"

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
