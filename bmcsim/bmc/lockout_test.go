package bmc

import (
	"crypto/rand"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/protocol"
	"github.com/bougou/go-ipmi/pkg/rmcpplus"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ooblab/ooblab/bmcsim/config"
	"github.com/ooblab/ooblab/bmcsim/lan"
	"github.com/ooblab/ooblab/internal/testutil"
)

// tryOpen sends Open Session and returns its status (and keeps the BMC's
// session ID when it is 0).
func (c *rmcpConsole) tryOpen() (uint8, error) {
	a, i, cr := rmcpplus.NewAlgorithmPayloads(suite17Auth, types.IntegrityAlg_HMAC_SHA256_128, types.CryptAlg_AES_CBC_128)
	req := &rmcpplus.OpenSessionRequest{RemoteConsoleSessionID: c.consID,
		AuthenticationPayload: a, IntegrityPayload: i, ConfidentialityPayload: cr}
	p, err := c.exchange(protocol.BuildRMCPPlusPacket(lan.PayloadOpenSession, 0, 0, 0, req.Pack()), lan.PayloadOpenResponse, 5*time.Second)
	if err != nil {
		return 0, err
	}
	if len(p) < 2 {
		return 0, fmt.Errorf("open session response %x", p)
	}
	if p[1] != 0 {
		return p[1], nil
	}
	var resp rmcpplus.OpenSessionResponse
	if err := resp.Unpack(p); err != nil {
		return 0, err
	}
	c.bmcID = resp.ManagedSystemSessionID
	return 0, nil
}

// tryLogin runs a whole handshake and says where it failed.
func (c *rmcpConsole) tryLogin(user, pass string, priv types.PrivilegeLevel) error {
	if st, err := c.tryOpen(); err != nil || st != 0 {
		return fmt.Errorf("open session: status %#x, %v", st, err)
	}
	if st := c.rakp1(user, priv); st != 0 {
		return fmt.Errorf("RAKP 2 status %#x", st)
	}
	if st, err := c.rakp3(0, pass, 5*time.Second); err != nil || st != 0 {
		return fmt.Errorf("RAKP 4 status %#x, %v", st, err)
	}
	return nil
}

// randomRAKP3 sends a RAKP 3 carrying random bytes as its code: a guess
// by someone who does not know the password. It returns the RAKP 4 status.
func (c *rmcpConsole) randomRAKP3() (uint8, error) {
	code := make([]byte, 32)
	_, _ = rand.Read(code)
	m := &rmcpplus.RAKPMessage3{ManagedSystemSessionID: c.bmcID, KeyExchangeAuthenticationCode: code}
	p, err := c.exchange(protocol.BuildRMCPPlusPacket(lan.PayloadRAKP3, 0, 0, 0, m.Pack()), lan.PayloadRAKP4, 5*time.Second)
	if err != nil {
		return 0, err
	}
	return p[1], nil
}

// lockoutConfig is testConfig with a short backoff bound, so that the
// bound can be waited out in a test.
func lockoutConfig() config.Config {
	cfg := testConfig()
	cfg.LockoutAttempts = 3
	cfg.LockoutDuration = config.Duration{Duration: time.Minute}
	cfg.LoginBackoffMax = config.Duration{Duration: time.Second}
	cfg.AuthTimeout = config.Duration{Duration: 300 * time.Millisecond}
	cfg.SourceHandshakeLimit = 1000
	return cfg
}

// Nothing a sender who does not know the password can send keeps the right
// password out: error-status RAKP 3s, RAKP 3s with a random code, and
// handshakes abandoned after RAKP 2, all naming admin, three times the
// threshold. Sent from 127.0.0.2, admin logs in from 127.0.0.1 at once,
// with ipmitool and with a console; sent from 127.0.0.1 itself (a spoofed
// source), admin gets in within the backoff bound. Abandoned handshakes are
// waited for until the BMC has counted them.
func TestStrangersCannotLockTheOwnerOut(t *testing.T) {
	need(t, "ipmitool")
	attacks := []struct {
		name string
		send func(c *rmcpConsole)
	}{
		{"error-status RAKP 3", func(c *rmcpConsole) { _, _ = c.rakp3(0x0F, "", 2*time.Second) }},
		{"random-code RAKP 3", func(c *rmcpConsole) { _, _ = c.randomRAKP3() }},
		{"abandoned after RAKP 2", func(c *rmcpConsole) {}},
	}
	for _, a := range attacks {
		for _, from := range []string{"127.0.0.2", "127.0.0.1"} {
			t.Run(a.name+" from "+from, func(t *testing.T) {
				cfg := lockoutConfig()
				l := startLAN(t, cfg)
				for i := 0; i < 3*cfg.LockoutAttempts; i++ {
					c := dialConsole(t, from, l.port, uint32(0x100+i))
					if st, err := c.tryOpen(); err != nil || st != 0 {
						continue // refused: the attacker's half-open handshakes are capped
					}
					if c.rakp1("admin", admin) == 0 {
						a.send(c)
					}
				}
				start := time.Now()
				if a.name == "abandoned after RAKP 2" {
					// Wait until they are counted (auth_timeout, then the sweep).
					testutil.WaitFor(t, 10*time.Second, "the abandoned handshakes to be counted", func() bool {
						return l.authFailures("abandoned") >= float64(cfg.LockoutAttempts)
					})
				}
				if from != "127.0.0.1" {
					// A clean source: at once, first try.
					if out, err := l.ipmitool(t, 17, "admin", "s3cret-admin", "mc", "info"); err != nil {
						t.Fatalf("admin refused from a clean source after a stranger's %s:\n%s", a.name, out)
					}
					dialConsole(t, "127.0.0.1", l.port, 0x42).login("admin", "s3cret-admin", admin)
					return
				}
				// The attacked source itself: within the backoff bound (plus
				// the time the half-open sessions take to be swept).
				bound := cfg.LoginBackoffMax.Duration + cfg.AuthTimeout.Duration + time.Second
				var err error
				for time.Since(start) < bound+2*time.Second {
					if err = dialConsole(t, "127.0.0.1", l.port, 0x42).tryLogin("admin", "s3cret-admin", admin); err == nil {
						break
					}
					time.Sleep(100 * time.Millisecond) // a console's retry interval
				}
				if err != nil {
					t.Fatalf("admin still refused %v after a spoofed %s (bound %v): %v", time.Since(start).Round(time.Millisecond), a.name, bound, err)
				}
				if out, err := l.ipmitool(t, 17, "admin", "s3cret-admin", "mc", "info"); err != nil {
					t.Fatalf("ipmitool refused after the backoff:\n%s", out)
				}
			})
		}
	}
}

// Six wrong passwords from ipmitool and, at once, the right one: refused,
// because each handshake counted from its RAKP 1 (ipmitool gives up after
// a RAKP 2 that does not verify, with no RAKP 3 the BMC could check). The
// right password gets in once the backoff is over.
func TestWrongPasswordsThenRightRefused(t *testing.T) {
	need(t, "ipmitool")
	cfg := testConfig() // defaults: threshold 5, auth_timeout 3 s
	// The first backoff is a quarter of the bound: 2.5 s, so that the right
	// password comes inside it even on a loaded machine.
	cfg.LoginBackoffMax = config.Duration{Duration: config.MaxLoginBackoff}
	l := startLAN(t, cfg)
	for i := 0; i < 6; i++ {
		if out, err := l.ipmitool(t, 17, "op", "wrong-password", "-L", "OPERATOR", "mc", "info"); err == nil {
			t.Fatalf("wrong password accepted:\n%s", out)
		}
	}
	if got := l.authFailures("refused"); got != 0 {
		t.Fatalf("%v handshakes refused by the server: the test's logins must fail on the password alone", got)
	}
	if out, err := l.ipmitool(t, 17, "op", "s3cret-op", "-L", "OPERATOR", "mc", "info"); err == nil {
		t.Fatalf("right password accepted at once after six wrong ones:\n%s", out)
	}
	if l.authFailures("backoff") == 0 {
		t.Errorf("no backoff refusal counted; log:\n%s", l.logs.String())
	}
	if strings.Contains(l.logs.String(), "s3cret") {
		t.Errorf("a password reached the log")
	}
	// A clean source logs in at once.
	if err := dialConsole(t, "127.0.0.2", l.port, 0x77).tryLogin("op", "s3cret-op", operator); err != nil {
		t.Fatalf("op refused from a clean source: %v", err)
	}
	// And the guessing source after the bound.
	deadline := time.Now().Add(config.MaxLoginBackoff + 3*time.Second)
	for {
		out, err := l.ipmitool(t, 17, "op", "s3cret-op", "-L", "OPERATOR", "mc", "info")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("right password still refused past the backoff bound:\n%s", out)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// A USER-privilege account cannot take the whole session table: with 32
// of its logins attempted and held (from four addresses), an operator and
// an administrator still log in.
func TestUserCannotFillSessions(t *testing.T) {
	need(t, "ipmitool")
	for _, tc := range []struct {
		name    string
		userCap int // session_user_limit; 32 leaves only the reserve to stop it
	}{{"defaults", 0}, {"reserve only", 32}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.SessionUserLimit, cfg.SessionSourceLimit = tc.userCap, tc.userCap
			l := startLAN(t, cfg)
			held := 0
			for i := 0; i < 32; i++ {
				c := dialConsole(t, fmt.Sprintf("127.0.0.%d", 2+i%4), l.port, uint32(0x200+i))
				if c.tryLogin("viewer", "s3cret-view", types.PrivilegeLevelUser) == nil {
					held++
				}
			}
			if held == 0 || held >= 32 {
				t.Fatalf("viewer holds %d sessions", held)
			}
			t.Logf("viewer holds %d of 32 sessions", held)
			if _, low := l.books.Slots.Held("viewer"); low != held || low > 32-l.Config.SessionReserved {
				t.Fatalf("slot book: %d sessions below operator, %d held, reserve %d", low, held, l.Config.SessionReserved)
			}
			if out, err := l.ipmitool(t, 17, "op", "s3cret-op", "-L", "OPERATOR", "mc", "info"); err != nil {
				t.Fatalf("operator refused with viewer's sessions held:\n%s", out)
			}
			dialConsole(t, "127.0.0.1", l.port, 0x42).login("admin", "s3cret-admin", admin)
		})
	}
}

// An Open Session flood from one address (no RAKP) neither evicts the
// VMS's handshake in progress nor keeps its next Open Session out.
func TestOpenSessionFloodSparesOthers(t *testing.T) {
	need(t, "ipmitool")
	l := startLAN(t, testConfig())
	vms := dialConsole(t, "127.0.0.1", l.port, 0x42)
	if st, err := vms.tryOpen(); err != nil || st != 0 {
		t.Fatalf("open session: status %#x, %v", st, err)
	}
	refused := 0
	for i := 0; i < 64; i++ {
		c := dialConsole(t, "127.0.0.2", l.port, uint32(0x300+i))
		if st, err := c.tryOpen(); err != nil {
			t.Fatal(err)
		} else if st != 0 {
			refused++
		}
	}
	if refused == 0 {
		t.Error("no Open Session of the flood was refused")
	}
	if st := vms.rakp1("admin", admin); st != 0 {
		t.Fatalf("the VMS's handshake was evicted by the flood: RAKP 2 status %#x", st)
	}
	if st, err := vms.rakp3(0, "s3cret-admin", 5*time.Second); err != nil || st != 0 {
		t.Fatalf("RAKP 4 status %#x, %v", st, err)
	}
	if err := dialConsole(t, "127.0.0.1", l.port, 0x43).tryLogin("admin", "s3cret-admin", admin); err != nil {
		t.Fatalf("a new login of the VMS during the flood: %v", err)
	}
	l.mustIpmitool(t, 17, "mc", "info")
}

// LAN configuration parameter 26, Bad Password Threshold, with ipmitool:
// `lan print` shows the configured policy, an administrator's `lan set`
// changes it (and the backoff follows it), an operator's is refused.
func TestBadPasswordThresholdParam(t *testing.T) {
	need(t, "ipmitool")
	cfg := testConfig()
	cfg.AttemptResetInterval = config.Duration{Duration: 2 * time.Minute}
	cfg.LoginBackoffMax = config.Duration{Duration: config.MaxLoginBackoff} // first backoff 2.5 s
	l := startLAN(t, cfg)
	wantAll(t, "lan print", l.mustIpmitool(t, 17, "lan", "print", "1"),
		"Bad Password Threshold  : 5", "Attempt Count Reset Int.: 120", "User Lockout Interval   : 60")
	l.mustIpmitool(t, 17, "lan", "set", "1", "bad_pass_thresh", "2", "1", "3", "30")
	wantAll(t, "lan print after set", l.mustIpmitool(t, 17, "lan", "print", "1"),
		"Bad Password Threshold  : 2", "Invalid password disable: yes", "Attempt Count Reset Int.: 30", "User Lockout Interval   : 300")
	if out, err := l.ipmitool(t, 17, "op", "s3cret-op", "-L", "OPERATOR", "lan", "set", "1", "bad_pass_thresh", "0", "0", "0", "0"); err == nil {
		t.Fatalf("an operator set the bad password threshold:\n%s", out)
	}
	if p := l.books.Logins.Policy(); p.Threshold != 2 {
		t.Fatalf("threshold %d after an operator's set, want 2", p.Threshold)
	}
	// Threshold 2: two wrong passwords and the right one is refused at once.
	for i := 0; i < 2; i++ {
		if out, err := l.ipmitool(t, 17, "viewer", "wrong", "-L", "USER", "mc", "info"); err == nil {
			t.Fatalf("wrong password accepted:\n%s", out)
		}
	}
	if out, err := l.ipmitool(t, 17, "viewer", "s3cret-view", "-L", "USER", "mc", "info"); err == nil {
		t.Fatalf("right password accepted at once past a threshold of 2:\n%s", out)
	}
}
