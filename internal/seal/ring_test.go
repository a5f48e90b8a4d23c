package seal

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ooblab/ooblab/internal/vmsg"
)

func ringSeeds(t testing.TB) []string {
	a, _ := Enroll("h1")
	b, _ := Enroll("h1")
	c, _ := Enroll("h2")
	return []string{
		a.URI() + "\n",
		"# rotating\n" + a.URI() + "\n\n" + b.URI() + "\n",
		a.URI() + "\n" + c.URI() + "\n",
		a.URI() + "\n" + b.URI() + "\n" + a.URI() + "\n",
		"",
		"# nothing\n",
		"otpauth://hotp/x?secret=AAAA",
	}
}

func TestParseKeyRing(t *testing.T) {
	seeds := ringSeeds(t)
	for i, want := range []int{1, 2, -1, -1, -1, -1, -1} {
		ring, err := ParseKeyRing(seeds[i])
		if want < 0 {
			if !errors.Is(err, ErrKey) {
				t.Errorf("seed %d: err %v, want ErrKey", i, err)
			}
			continue
		}
		if err != nil || len(ring) != want {
			t.Errorf("seed %d: %d keys, %v", i, len(ring), err)
		}
	}
	if _, err := ParseKeyRing(seeds[2]); err == nil || strings.Contains(err.Error(), "secret=") {
		t.Fatalf("error quotes the key: %v", err)
	}
}

// TestHostKeyRotation walks the four steps of ParseKeyRing's rotation: at
// each one, each side opens what the other seals.
func TestHostKeyRotation(t *testing.T) {
	old, _ := Enroll("h1")
	next, _ := Enroll("h1")
	now := time.Unix(1_700_000_000, 0)
	for _, st := range []struct {
		name     string
		vms, hst []*Key
	}{
		{"before", []*Key{old}, []*Key{old}},
		{"1: VMS opens both", []*Key{old, next}, []*Key{old}},
		{"2: host seals with next", []*Key{old, next}, []*Key{next, old}},
		{"3: VMS seals with next", []*Key{next, old}, []*Key{next, old}},
		{"4: old key gone", []*Key{next}, []*Key{next}},
	} {
		for _, dir := range []struct {
			from, to []*Key
		}{{st.vms, st.hst}, {st.hst, st.vms}} {
			env, err := NewSealer(dir.from[0]).Seal(vmsg.KindRequest, 1, []byte("x"), now)
			if err != nil {
				t.Fatal(err)
			}
			o := NewOpener(dir.to[0], OpenerOptions{Also: dir.to[1:]})
			if _, _, err := o.Open(env, now); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
		}
	}
	// A key not in the ring still fails, and a foreign host's key in Also
	// is ignored.
	other, _ := Enroll("h1")
	h2, _ := Enroll("h2")
	env, _ := NewSealer(other).Seal(vmsg.KindRequest, 2, []byte("x"), now)
	if _, _, err := NewOpener(old, OpenerOptions{Also: []*Key{next, h2}}).Open(env, now); !errors.Is(err, ErrAuth) {
		t.Fatalf("unknown key: %v", err)
	}
}

func FuzzParseKeyRing(f *testing.F) {
	for _, s := range ringSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ring, err := ParseKeyRing(s)
		if err != nil {
			return
		}
		if len(ring) == 0 || len(ring) > MaxRing {
			t.Fatalf("%d keys", len(ring))
		}
		for _, k := range ring {
			if k.HostID() != ring[0].HostID() || len(k.Secret()) == 0 {
				t.Fatalf("ring mixes hosts or has an empty key")
			}
		}
	})
}
