package lanattack_test

import (
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ooblab/ooblab/bmcsim/bmcsimtest"
	"github.com/ooblab/ooblab/internal/lanattack"
)

// Each kind of handshake reaches the step it claims against a real bmcsim
// BMC: RAKP 2 comes back (the name is known), and a bad RAKP 3 never yields
// a session (RAKP 4 with an error, or silence).
func TestHandshakeKinds(t *testing.T) {
	b := bmcsimtest.Start(t, bmcsimtest.Options{NoKCS: true, NoSerial: true})
	for _, k := range []lanattack.Kind{lanattack.OpenOnly, lanattack.Abandon, lanattack.ErrorStatus, lanattack.RandomHMAC} {
		code, err := lanattack.Handshake("127.0.0.2", b.LAN, b.User.Name, k, 2*time.Second)
		if err != nil {
			t.Fatalf("%v: %v", k, err)
		}
		if k == lanattack.OpenOnly || k == lanattack.Abandon {
			if code != types.RmcpStatusCodeNoErrors {
				t.Errorf("%v: status %#x, want 0 (the BMC took the step)", k, uint8(code))
			}
			continue
		}
		t.Logf("%v: RAKP 4 status %#x", k, uint8(code))
	}
	if _, err := lanattack.Handshake("127.0.0.2", b.LAN, "nosuchuser", lanattack.Abandon, 2*time.Second); err != nil {
		t.Fatalf("unknown user: %v", err)
	}
}
