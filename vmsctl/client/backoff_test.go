package client

import (
	"context"
	"testing"
	"time"

	"github.com/ooblab/ooblab/internal/lanattack"
)

// A stranger spoofing the VMS's own address with handshakes it cannot
// finish puts that address in the BMC's login backoff; the VMS's next
// login is answered "insufficient resources" for a few seconds. That is a
// wait, not a refusal of its credentials: it gets in within its deadline.
func TestBMCBackoffIsAWaitNotARefusal(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out the BMC's login backoff (~6 s): integration tier")
	}
	c, b, _ := bmcClient(t, "op-secret-1")
	for range 8 {
		for _, k := range []lanattack.Kind{lanattack.ErrorStatus, lanattack.RandomHMAC} {
			if _, err := lanattack.Handshake("127.0.0.1", b.LAN, "op", k, time.Second); err != nil {
				t.Logf("attacker: %v", err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t0 := time.Now()
	st, err := c.HostPower(ctx, "h1")
	if err != nil || !st.On {
		t.Fatalf("after the spoofed handshakes: %+v, %v (after %v)", st, err, time.Since(t0))
	}
	t.Logf("logged in %v after the attack", time.Since(t0).Round(time.Millisecond))
}
