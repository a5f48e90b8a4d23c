package sol_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ooblab/ooblab/bmcsim/bmcsimtest"
	"github.com/ooblab/ooblab/bmcsim/config"
	"github.com/ooblab/ooblab/internal/termtest"
	"github.com/ooblab/ooblab/internal/testutil"
)

// serialPeer plays QEMU's serial chardev at the seam: it dials the BMC's
// serial port, records what the BMC types into it and writes host output.
type serialPeer struct {
	c net.Conn

	mu      sync.Mutex
	got     bytes.Buffer
	changed chan struct{}
}

func dialSerial(t *testing.T, b *bmcsimtest.BMC) *serialPeer {
	t.Helper()
	c, err := net.Dial("tcp", b.SerialAddr())
	if err != nil {
		t.Fatal(err)
	}
	p := &serialPeer{c: c, changed: make(chan struct{})}
	t.Cleanup(func() { _ = c.Close() })
	go func() {
		buf := make([]byte, 1024)
		for {
			n, err := c.Read(buf)
			p.mu.Lock()
			p.got.Write(buf[:n])
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	waitFor(t, 10*time.Second, "QEMU's serial connection seen by the BMC", b.Serial.Connected)
	return p
}

func (p *serialPeer) write(t *testing.T, s string) {
	t.Helper()
	if _, err := p.c.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

// expect waits until the host has received want.
func (p *serialPeer) expect(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		p.mu.Lock()
		s, ch := p.got.String(), p.changed
		p.mu.Unlock()
		if strings.Contains(s, want) {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("the host's serial port never received %q; it got %q", want, s)
		}
	}
}

// waitFor polls cond (a state of the BMC with no event to wait on) until
// it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(d)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
	}
}

type solBMC struct {
	*bmcsimtest.BMC
	users map[string]config.User
}

// startSOL starts a BMC with a serial port. Its LAN port is below 32768:
// FreeIPMI 1.6.10 refuses higher ones in HOST:PORT ("hostname invalid"),
// and the kernel's ephemeral ports start there, so a free one is drawn
// from 10000-32767 and taken, retrying on a collision.
func startSOL(t *testing.T, edit func(*config.Config)) *solBMC {
	t.Helper()
	users := []config.User{
		{Name: "admin", Password: "pw-admin-0123", Privilege: "administrator"},
		{Name: "vms", Password: "pw-vms-0123", Privilege: "operator"},
		{Name: "viewer", Password: "pw-view-0123", Privilege: "user"},
	}
	var b *bmcsimtest.BMC
	var err error
	for range 20 {
		port := 10000 + rand.IntN(22768)
		b, err = bmcsimtest.New(bmcsimtest.Options{Users: users, Logger: testutil.Logger(t), Config: func(c *config.Config) {
			c.LAN = "127.0.0.1:" + strconv.Itoa(port)
			if edit != nil {
				edit(c)
			}
		}})
		if err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Stop(); err != nil {
			t.Errorf("bmcsimtest: %v", err)
		}
	})
	s := &solBMC{BMC: b, users: map[string]config.User{}}
	for _, u := range users {
		s.users[u.Name] = u
	}
	return s
}

// ipmitoolArgs are ipmitool's lanplus arguments for user at its privilege.
func (b *solBMC) ipmitoolArgs(user string, args ...string) []string {
	u := b.users[user]
	priv := map[string]string{"operator": "OPERATOR", "user": "USER", "administrator": "ADMINISTRATOR"}[u.Privilege]
	return append([]string{"-I", "lanplus", "-C", "17", "-H", "127.0.0.1", "-p", strconv.Itoa(b.Port),
		"-U", u.Name, "-P", u.Password, "-L", priv, "-R", "3", "-N", "1"}, args...)
}

func (b *solBMC) ipmitool(t *testing.T, user string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ipmitool", b.ipmitoolArgs(user, args...)...).CombinedOutput()
	return string(out), err
}

// activate runs `ipmitool sol activate` on a pseudo-terminal and waits for
// the session to be up.
func (b *solBMC) activate(t *testing.T, user string) *termtest.Term {
	t.Helper()
	term, err := termtest.Start(exec.Command("ipmitool", b.ipmitoolArgs(user, "sol", "activate")...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = term.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := term.Expect(ctx, 0, "SOL Session operational"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the SOL session attached to the serial port", b.Serial.Attached)
	return term
}

func expectTerm(t *testing.T, term *termtest.Term, from int, want string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	at, err := term.Expect(ctx, from, want)
	if err != nil {
		t.Fatal(err)
	}
	return at
}

// waitExit waits for ipmitool to exit.
func waitExit(t *testing.T, term *termtest.Term) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = term.Wait(ctx) // ipmitool's exit status after a BMC-side close varies
	if !term.Exited() {
		t.Fatalf("ipmitool still runs; it printed:\n%s", term.Output())
	}
}

// TestIpmitoolSOL: real ipmitool `sol activate` over suite 17 carries the
// host's serial both ways; a second activation is refused while one is
// active; `sol deactivate` from another session ends it; `~.` quits.
func TestIpmitoolSOL(t *testing.T) {
	testutil.Integration(t, "ipmitool")
	b := startSOL(t, nil)
	peer := dialSerial(t, b.BMC)

	out, err := b.ipmitool(t, "admin", "sol", "info")
	if err != nil {
		t.Fatalf("sol info: %v\n%s", err, out)
	}
	for _, want := range []string{"Enabled                         : true", "Force Encryption                : true",
		"Force Authentication            : true", "Privilege Level                 : ADMINISTRATOR"} {
		if !strings.Contains(out, want) {
			t.Errorf("sol info lacks %q:\n%s", want, out)
		}
	}

	term := b.activate(t, "admin")
	peer.write(t, "\r\nDebian GNU/Linux 12 h1 ttyS0\r\n\r\nh1 login: ")
	at := expectTerm(t, term, 0, "h1 login: ")
	if err := term.Type("root\r"); err != nil {
		t.Fatal(err)
	}
	peer.expect(t, "root\r")
	peer.write(t, "root\r\nroot@h1:~# ")
	at = expectTerm(t, term, at, "root@h1:~# ")

	// Output larger than one SOL packet (251 characters) arrives whole and
	// in order.
	var big strings.Builder
	for i := range 200 {
		big.WriteString("line " + strconv.Itoa(i) + "\r\n")
	}
	peer.write(t, big.String()+"END\r\n")
	at = expectTerm(t, term, at, "line 199\r\nEND")
	if got := term.Output(); !strings.Contains(got, big.String()) {
		t.Errorf("the terminal did not get the 200 lines whole and in order")
	}

	// One SOL session per BMC.
	out, err = b.ipmitool(t, "admin", "sol", "activate")
	if err == nil || !strings.Contains(out, "already active") {
		t.Errorf("a second sol activate: err %v, want 'already active':\n%s", err, out)
	}

	// sol deactivate from another session ends the first.
	if out, err := b.ipmitool(t, "admin", "sol", "deactivate"); err != nil {
		t.Fatalf("sol deactivate: %v\n%s", err, out)
	}
	waitExit(t, term)
	expectTerm(t, term, at, "SOL session closed by BMC")
	waitFor(t, 10*time.Second, "the serial port detached", func() bool { return !b.Serial.Attached() })

	// The port is free again; the operator quits with ~. and ipmitool
	// deactivates its payload on the way out.
	term = b.activate(t, "admin")
	if err := term.Type("\r~."); err != nil {
		t.Fatal(err)
	}
	waitExit(t, term)
	waitFor(t, 10*time.Second, "the serial port detached after ~.", func() bool { return !b.Serial.Attached() })
	if _, err := b.ipmitool(t, "admin", "sol", "deactivate"); err == nil {
		t.Errorf("sol deactivate after ~. succeeded: the payload was still active")
	}
}

// TestIpmitoolSOLPrivilege: SOL is the host's root console, so by default
// only an ADMINISTRATOR session may activate it: ipmitool `sol activate`
// as a USER or an OPERATOR (the VMS's own user) is refused with
// "insufficient privilege" (0xD4) and never holds the serial port.
// sol_privilege stays configurable: at "operator" the operator may.
func TestIpmitoolSOLPrivilege(t *testing.T) {
	testutil.Integration(t, "ipmitool")
	b := startSOL(t, nil)
	dialSerial(t, b.BMC)
	for _, user := range []string{"viewer", "vms"} {
		out, err := b.ipmitool(t, user, "sol", "activate")
		if err == nil || !strings.Contains(strings.ToLower(out), "insufficient privilege") {
			t.Errorf("sol activate as %s (%s) with the default sol_privilege: err %v, want insufficient privilege:\n%s",
				user, b.users[user].Privilege, err, out)
		}
		if b.Serial.Attached() {
			t.Errorf("the refused %s session holds the serial port", user)
		}
	}
	term := b.activate(t, "admin") // an administrator may
	if err := term.Type("\r~."); err != nil {
		t.Fatal(err)
	}
	waitExit(t, term)

	b = startSOL(t, func(c *config.Config) { c.SOLPrivilege = "operator" })
	dialSerial(t, b.BMC)
	out, err := b.ipmitool(t, "viewer", "sol", "activate")
	if err == nil || !strings.Contains(strings.ToLower(out), "insufficient privilege") {
		t.Errorf("sol activate as a USER with sol_privilege operator: err %v, want insufficient privilege:\n%s", err, out)
	}
	term = b.activate(t, "vms") // an operator may, when configured
	if err := term.Type("\r~."); err != nil {
		t.Fatal(err)
	}
	waitExit(t, term)
}

// TestIpmitoolSOLIdleTimeout: a SOL session idle for sol_idle_timeout is
// deactivated, with the deactivation notice ipmitool reports.
func TestIpmitoolSOLIdleTimeout(t *testing.T) {
	testutil.Integration(t, "ipmitool")
	b := startSOL(t, func(c *config.Config) { c.SOLIdleTimeout.Duration = 2 * time.Second })
	dialSerial(t, b.BMC)
	start := time.Now()
	term := b.activate(t, "admin")
	waitExit(t, term)
	if d := time.Since(start); d < 2*time.Second {
		t.Errorf("deactivated after %v, before the 2 s idle timeout", d)
	}
	expectTerm(t, term, 0, "SOL session closed by BMC")
	waitFor(t, 10*time.Second, "the serial port detached", func() bool { return !b.Serial.Attached() })
}
