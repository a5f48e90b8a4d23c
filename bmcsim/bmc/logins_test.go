package bmc

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/types"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ooblab/ooblab/bmcsim/config"
	"github.com/ooblab/ooblab/bmcsim/lan"
	"github.com/ooblab/ooblab/internal/testutil"
)

const (
	goIPMIConsoleID = 0xa0a1a2a3 // the console session ID go-ipmi's client always uses
	admin           = types.PrivilegeLevelAdministrator
	operator        = types.PrivilegeLevelOperator
)

func (l *lanBMC) authFailures(reason string) float64 {
	return promtest.ToFloat64(l.metrics.AuthFailures.WithLabelValues("t1", reason))
}

// A handshake abandoned after RAKP 2 counts from its RAKP 1 against its
// source, and is a failure once auth_timeout has passed; a late RAKP 3 for
// it finds nothing to guess against.
func TestAbandonedHandshakeEnds(t *testing.T) {
	cfg := testConfig()
	cfg.AuthTimeout = config.Duration{Duration: 200 * time.Millisecond}
	l := startLAN(t, cfg)
	c := dialConsole(t, "127.0.0.2", l.port, goIPMIConsoleID)
	c.open()
	if st := c.rakp1("admin", admin); st != 0 {
		t.Fatalf("RAKP 2 status %#x", st)
	}
	testutil.WaitFor(t, 10*time.Second, "the abandoned handshake to be counted", func() bool { return l.authFailures("abandoned") == 1 })
	if st, err := c.rakp3(0, "s3cret-admin", 500*time.Millisecond); err == nil {
		t.Errorf("late RAKP 3 of an abandoned handshake answered with status %#x", st)
	}
}

// A failed login the BMC sees (a RAKP 3 with an error status, a RAKP 3 code
// made from a wrong password) counts at once against its source: the login
// right after the threshold, with the right password, waits its backoff,
// while another address logs in at once.
func TestVerifiedFailedLoginsCountAtOnce(t *testing.T) {
	need(t, "ipmitool")
	cfg := testConfig()
	cfg.LockoutAttempts = 3
	cfg.AuthTimeout = config.Duration{Duration: time.Hour}                  // nothing here is counted by the sweeper
	cfg.LoginBackoffMax = config.Duration{Duration: config.MaxLoginBackoff} // first backoff 2.5 s
	l := startLAN(t, cfg)

	// Consoles that find our RAKP 2 does not match their password and say so.
	for i := 0; i < cfg.LockoutAttempts-1; i++ {
		c := dialConsole(t, "127.0.0.1", l.port, uint32(0x100+i))
		c.open()
		if st := c.rakp1("admin", admin); st != 0 {
			t.Fatalf("RAKP 2 status %#x", st)
		}
		if c.rakp2Matches("wrong-password") {
			t.Fatal("RAKP 2 verified against a wrong password")
		}
		if _, err := c.rakp3(0x0F, "", 5*time.Second); err != nil {
			t.Fatalf("RAKP 3 with an error status: %v", err)
		}
	}
	if w := l.LoginWait("admin", "127.0.0.1"); w != 0 {
		t.Fatalf("a wait of %v after %d failures, threshold %d", w, cfg.LockoutAttempts-1, cfg.LockoutAttempts)
	}
	// A console that guesses: its RAKP 3 code is made from a wrong password.
	c := dialConsole(t, "127.0.0.1", l.port, 0x200)
	c.open()
	c.rakp1("admin", admin)
	st, err := c.rakp3(0, "wrong-password", 5*time.Second)
	if err != nil || st == 0 {
		t.Fatalf("RAKP 3 from a wrong password: status %#x, %v", st, err)
	}
	if w := l.LoginWait("admin", "127.0.0.1"); w <= 0 || w > l.Config.LoginBackoffMax.Duration {
		t.Fatalf("wait %v after the failure that reached the threshold, want (0, %v]", w, l.Config.LoginBackoffMax.Duration)
	}
	if out, err := l.ipmitool(t, 17, "admin", "s3cret-admin", "mc", "info"); err == nil {
		t.Errorf("right password accepted right after the threshold was reached:\n%s", out)
	}
	if got := l.authFailures("rakp3_status"); got != float64(cfg.LockoutAttempts-1) {
		t.Errorf("rakp3_status failures = %v, want %d", got, cfg.LockoutAttempts-1)
	}
	if got := l.authFailures("bad_credentials"); got != 1 {
		t.Errorf("bad_credentials failures = %v, want 1", got)
	}
	if !l.Slowed("admin") {
		t.Error("admin not slowed down at its threshold")
	}
	// Another address is clean: at once.
	dialConsole(t, "127.0.0.3", l.port, 0x300).login("admin", "s3cret-admin", admin)
}

// Two consoles using the same console session ID: one naming an unknown
// user cannot make the other's failed logins go uncounted, and with both
// logged in, a retransmitted request gets its own session's answer.
func TestConsoleIDCollision(t *testing.T) {
	t.Run("count", func(t *testing.T) {
		cfg := testConfig()
		cfg.LockoutAttempts = 3
		cfg.AuthTimeout = config.Duration{Duration: time.Hour}
		l := startLAN(t, cfg)
		for i := 0; i < cfg.LockoutAttempts; i++ {
			a := dialConsole(t, "127.0.0.1", l.port, goIPMIConsoleID)
			b := dialConsole(t, "127.0.0.1", l.port, goIPMIConsoleID)
			a.open()
			a.rakp1("admin", admin)
			b.open()
			b.rakp1("mallory", admin)
			if st, err := a.rakp3(0, "guess", 5*time.Second); err != nil || st == 0 {
				t.Fatalf("guess: RAKP 4 status %#x, %v", st, err)
			}
			if _, err := b.rakp3(0x0F, "", 5*time.Second); err != nil {
				t.Fatalf("unknown user's RAKP 3: %v", err)
			}
		}
		if got := l.authFailures("bad_credentials"); got != float64(cfg.LockoutAttempts) {
			t.Fatalf("bad_credentials = %v, want %d: admin's failed logins went uncounted beside an unknown user with the same console ID", got, cfg.LockoutAttempts)
		}
		if got := l.authFailures("unknown_user"); got != float64(cfg.LockoutAttempts) {
			t.Errorf("unknown_user failures = %v, want %d", got, cfg.LockoutAttempts)
		}
	})
	t.Run("replies", func(t *testing.T) {
		l := startLAN(t, testConfig())
		a := dialConsole(t, "127.0.0.1", l.port, goIPMIConsoleID)
		b := dialConsole(t, "127.0.0.1", l.port, goIPMIConsoleID)
		a.login("admin", "s3cret-admin", admin)
		b.login("op", "s3cret-op", operator)
		want := map[*rmcpConsole]uint8{a: 2, b: 3} // user IDs: admin, op
		// Same request, same rqSeq, on both sessions; then each again.
		for _, step := range []struct {
			c      *rmcpConsole
			resend bool
		}{{a, false}, {b, false}, {a, true}, {b, true}, {b, true}, {a, true}} {
			var cc uint8
			var data []byte
			var err error
			if step.resend {
				cc, data, err = step.c.resend()
			} else {
				cc, data, err = step.c.do(0x06, 0x3D, []byte{0x00}) // Get Session Info, this session
			}
			if err != nil || cc != 0 {
				t.Fatalf("%s: Get Session Info: cc %#x, %v", step.c, cc, err)
			}
			if got := sessionUserID(t, step.c, data); got != want[step.c] {
				t.Fatalf("%s (resend %v): answer for user ID %d, want %d", step.c, step.resend, got, want[step.c])
			}
		}
		if got := promtest.ToFloat64(l.metrics.Retransmits.WithLabelValues("t1")); got != 4 {
			t.Errorf("retransmits metric = %v, want 4", got)
		}
	})
}

// A source that names unknown users past its budget gets no RAKP 2 to
// harvest; other sources are not affected.
func TestSourceThrottle(t *testing.T) {
	need(t, "ipmitool")
	cfg := testConfig()
	cfg.SourceHandshakeLimit = 4
	l := startLAN(t, cfg)
	for _, name := range []string{"nobody", "root", "ADMIN", "Administrator"} {
		c := dialConsole(t, "127.0.0.3", l.port, goIPMIConsoleID)
		c.open()
		if st := c.rakp1(name, admin); st != 0 {
			t.Fatalf("RAKP 2 status %#x for an unknown name (no user enumeration)", st)
		}
	}
	c := dialConsole(t, "127.0.0.3", l.port, goIPMIConsoleID)
	c.open()
	if st := c.rakp1("admin", admin); st != lan.StatusInsufficientResources {
		t.Fatalf("RAKP 2 status %#x for a source over its budget, want %#x", st, lan.StatusInsufficientResources)
	}
	if got := l.authFailures("source_throttled"); got != 1 {
		t.Errorf("source_throttled = %v, want 1", got)
	}
	if !strings.Contains(l.logs.String(), "source throttled") {
		t.Errorf("throttle not logged:\n%s", l.logs.String())
	}
	// Another source logs in, with ipmitool and with the right password.
	wantAll(t, "ipmitool from another source", l.mustIpmitool(t, 17, "mc", "info"), "Device ID")
	d := dialConsole(t, "127.0.0.1", l.port, goIPMIConsoleID)
	d.login("admin", "s3cret-admin", admin)
}

// A RAKP 3 must come from the address its RAKP 1 came from: one from
// elsewhere is dropped, so that no password guess reaches the server
// outside the accounting.
func TestRAKP3FromAnotherAddressDropped(t *testing.T) {
	l := startLAN(t, testConfig())
	c := dialConsole(t, "127.0.0.1", l.port, 0x42)
	c.open()
	if st := c.rakp1("admin", admin); st != 0 {
		t.Fatalf("RAKP 2 status %#x", st)
	}
	other := dialConsole(t, "127.0.0.4", l.port, 0x42)
	other.bmcID, other.user, other.role, other.consRand, other.r2 = c.bmcID, c.user, c.role, c.consRand, c.r2
	if st, err := other.rakp3(0, "s3cret-admin", 500*time.Millisecond); err == nil {
		t.Fatalf("RAKP 3 from another address answered with status %#x", st)
	}
	if st, err := c.rakp3(0, "s3cret-admin", 5*time.Second); err != nil || st != 0 {
		t.Fatalf("RAKP 3 from the handshake's address: status %#x, %v", st, err)
	}
}

// Working clients never meet the source budget nor a backoff: as many
// concurrent logins from one address as the threshold (same console ID, as
// go-ipmi's client), ipmitool and FreeIPMI, with a budget of 1.
func TestWorkingClientsNeverThrottled(t *testing.T) {
	need(t, "ipmitool", "bmc-info")
	cfg := testConfig()
	cfg.SourceHandshakeLimit = 1
	cfg.LockoutAttempts = 6
	l := startLAN(t, cfg)
	var wg sync.WaitGroup
	for i := 0; i < cfg.LockoutAttempts; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dialConsole(t, "127.0.0.1", l.port, goIPMIConsoleID)
			c.login("admin", "s3cret-admin", admin)
			if cc, _, err := c.do(0x06, 0x01, nil); err != nil || cc != 0 {
				t.Errorf("Get Device ID: cc %#x, %v", cc, err)
			}
			if cc, _, err := c.do(0x06, 0x3C, leID(c.bmcID)); err != nil || cc != 0 {
				t.Errorf("Close Session: cc %#x, %v", cc, err)
			}
		}()
	}
	wg.Wait()
	for i := 0; i < 3; i++ {
		l.mustIpmitool(t, 17, "mc", "info")
		l.freeipmi(t, "bmc-info")
	}
	for _, reason := range []string{"abandoned", "refused", "unknown_user", "source_throttled", "bad_credentials", "rakp3_status", "backoff", "open_refused"} {
		if got := l.authFailures(reason); got != 0 {
			t.Errorf("%s failures = %v after working logins, want 0", reason, got)
		}
	}
}

func leID(id uint32) []byte { return []byte{byte(id), byte(id >> 8), byte(id >> 16), byte(id >> 24)} }

// Every RAKP 1 draws a fresh RAKP 2 (a new hash to crack), so RAKP 1s
// repeated on one pending handshake spend the source's budget at once, and
// a new handshake from the same address and console ID ends the pending one
// as abandoned.
func TestRepeatedAndSupersededHandshakes(t *testing.T) {
	cfg := testConfig()
	cfg.SourceHandshakeLimit = 3
	cfg.AuthTimeout = config.Duration{Duration: time.Hour} // nothing here is counted by the sweeper
	l := startLAN(t, cfg)

	first := dialConsole(t, "127.0.0.5", l.port, goIPMIConsoleID)
	first.open()
	if st := first.rakp1("admin", admin); st != 0 {
		t.Fatalf("RAKP 2 status %#x", st)
	}
	// The same console, a new handshake: the first one is abandoned.
	second := first.sameSocket()
	second.open()
	if st := second.rakp1("admin", admin); st != 0 {
		t.Fatalf("RAKP 2 status %#x", st)
	}
	if got := l.authFailures("abandoned"); got != 1 {
		t.Errorf("abandoned = %v after a superseding handshake, want 1", got)
	}
	if st, err := first.rakp3(0, "s3cret-admin", 500*time.Millisecond); err == nil {
		t.Errorf("RAKP 3 of a superseded handshake answered with status %#x", st)
	}
	// RAKP 1 again on the second handshake: charged at once, until the
	// budget (3) is gone.
	for i := 0; i < 3; i++ {
		if st := second.rakp1("admin", admin); st != 0 {
			t.Fatalf("repeated RAKP 1 #%d: RAKP 2 status %#x", i+1, st)
		}
	}
	if got := l.authFailures("repeated_rakp1"); got != 3 {
		t.Errorf("repeated_rakp1 = %v, want 3", got)
	}
	if st := second.rakp1("admin", admin); st != lan.StatusInsufficientResources {
		t.Errorf("RAKP 1 past the source budget: RAKP 2 status %#x, want %#x", st, lan.StatusInsufficientResources)
	}
	if w := l.LoginWait("admin", "127.0.0.1"); w != 0 {
		t.Errorf("admin made to wait %v at another address", w)
	}
}
