package sol_test

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ooblab/ooblab/internal/termtest"
	"github.com/ooblab/ooblab/internal/testutil"
)

// ipmiconsoleArgs are FreeIPMI ipmiconsole's arguments for user at its
// privilege, suite 17, on the BMC's port (FreeIPMI takes HOST:PORT).
func (b *solBMC) ipmiconsoleArgs(user string, args ...string) []string {
	u := b.users[user]
	return append([]string{"-h", "127.0.0.1:" + strconv.Itoa(b.Port), "-u", u.Name, "-p", u.Password,
		"-l", strings.ToUpper(u.Privilege), "-I", "17"}, args...)
}

func (b *solBMC) ipmiconsole(t *testing.T, user string, args ...string) *termtest.Term {
	t.Helper()
	term, err := termtest.Start(exec.Command("ipmiconsole", b.ipmiconsoleArgs(user, args...)...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = term.Close() })
	return term
}

// TestIpmiconsoleSOL: FreeIPMI's ipmiconsole carries the serial both ways;
// with --dont-steal it is refused while ipmitool holds the port, without it
// it takes the port over (ipmiconsole's default, a Deactivate Payload of the
// other session's instance); &. quits and deactivates.
func TestIpmiconsoleSOL(t *testing.T) {
	testutil.Integration(t, "ipmitool", "ipmiconsole")
	b := startSOL(t, nil)
	peer := dialSerial(t, b.BMC)

	term := b.ipmiconsole(t, "admin")
	expectTerm(t, term, 0, "[SOL established]")
	waitFor(t, 10*time.Second, "the SOL session attached", b.Serial.Attached)
	peer.write(t, "\r\nh1 login: ")
	at := expectTerm(t, term, 0, "h1 login: ")
	if err := term.Type("root\r"); err != nil {
		t.Fatal(err)
	}
	peer.expect(t, "root\r")
	peer.write(t, "root\r\nroot@h1:~# ")
	expectTerm(t, term, at, "root@h1:~# ")
	if err := term.Type("&."); err != nil {
		t.Fatal(err)
	}
	waitExit(t, term)
	waitFor(t, 10*time.Second, "the serial port detached after &.", func() bool { return !b.Serial.Attached() })

	// ipmitool holds the port: --dont-steal is refused, the default steals.
	held := b.activate(t, "admin")
	refused := b.ipmiconsole(t, "admin", "--dont-steal")
	waitExit(t, refused)
	if out := refused.Output(); !strings.Contains(strings.ToLower(out), "in use") {
		t.Errorf("ipmiconsole --dont-steal while ipmitool holds SOL printed %q, want 'in use'", out)
	}
	stealer := b.ipmiconsole(t, "admin")
	expectTerm(t, stealer, 0, "[SOL established]")
	waitExit(t, held)
	expectTerm(t, held, 0, "SOL session closed by BMC")
	peer.write(t, "stolen\r\n")
	expectTerm(t, stealer, 0, "stolen")
	if err := stealer.Type("&."); err != nil {
		t.Fatal(err)
	}
	waitExit(t, stealer)
}
