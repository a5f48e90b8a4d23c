package cmd

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

var requestInError = regexp.MustCompile(`h1: request ([0-9a-f]{16}): `)

// TestLostAnswerIsUnknownThenResult: a reboot the host ran whose answer is
// lost on every channel exits 7 (not 5, "unreachable") naming its request
// id and how to look it up; vmsctl result then reads the outcome from the
// host's journal; the VM rebooted once although auto mode asked twice.
func TestLostAnswerIsUnknownThenResult(t *testing.T) {
	for _, via := range []string{"auto", "oob", "vmmi"} {
		t.Run(via, func(t *testing.T) {
			r := newRig(t)
			code, out, errs := r.run(t, "--via", via, "--timeout", "300ms", "vm", "reboot", "h1", "slow1")
			if code != ExitUnknown {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, ExitUnknown, out, errs)
			}
			m := requestInError.FindStringSubmatch(errs)
			if m == nil || !strings.Contains(errs, "outcome unknown") || !strings.Contains(errs, "vmsctl result h1 "+m[1]) {
				t.Fatalf("stderr names no request id or lookup:\n%s", errs)
			}
			if n := r.journal.count(); n != 1 {
				t.Fatalf("the host rebooted the VM %d times", n)
			}
			code, out, errs = r.run(t, "result", "h1", m[1])
			if code != ExitOK || !strings.Contains(out, "reboot slow1 on h1 (request "+m[1]) || !strings.Contains(out, ": ok (running)") {
				t.Fatalf("result: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
			}
		})
	}
}

func TestResultNotJournalled(t *testing.T) {
	r := newRig(t)
	code, _, errs := r.run(t, "result", "h1", "00000000000000aa")
	if code != ExitUnknown || !strings.Contains(errs, "h1: request 00000000000000aa: outcome unknown: no outcome in the host's journal") {
		t.Fatalf("exit %d: %s", code, errs)
	}
	// --wait asks again until --timeout.
	code, _, errs = r.run(t, "--timeout", "200ms", "result", "--wait", "h1", "00000000000000aa")
	if code != ExitUnknown || !strings.Contains(errs, "waited") {
		t.Fatalf("--wait: exit %d: %s", code, errs)
	}
	// A journalled failure exits as the request would have.
	code, out, errs := r.run(t, "result", "h1", "0000000000002222")
	if code != ExitError || !strings.Contains(out, "failed on the host") || !strings.Contains(errs, "h1: request 0000000000002222: failed on the host") {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	for _, bad := range []string{"xyz", "0"} {
		if code, _, _ := r.run(t, "result", "h1", bad); code != ExitUsage {
			t.Fatalf("%q: exit %d", bad, code)
		}
	}
}

// TestResultStillRunning: the host's history lists an action still running
// (hvagent shows it, code "in progress"): that is no outcome yet. vmsctl
// result exits 7 saying so (was 1, as if it had failed on the host), and
// --wait waits for the outcome (was: returned at once).
func TestResultStillRunning(t *testing.T) {
	r := newRig(t)
	const id = 0x3333
	running := vmsg.HistoryItem{RequestID: id, Code: vmsg.ErrInProgress, Error: "still running on the host",
		Executed: vmsg.Executed{Principal: "ops", Command: vmsg.CmdReboot, VM: "web1", Via: client.ViaVMMI,
			TimeMs: time.Date(2026, 11, 29, 13, 40, 0, 0, time.UTC).UnixMilli()}}
	r.journal.set(running)
	code, out, errs := r.run(t, "result", "h1", "0000000000003333")
	if code != ExitUnknown || !strings.Contains(errs, "h1: request 0000000000003333: outcome unknown") || !strings.Contains(errs, "still running") {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	// --wait: the action ends while vmsctl waits.
	reads := r.journal.reads()
	go func() {
		for deadline := time.Now().Add(5 * time.Second); r.journal.reads() == reads && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		done := running
		done.Code, done.Error, done.OK, done.State = 0, "", true, "running"
		r.journal.set(done)
	}()
	code, out, errs = r.run(t, "--timeout", "5s", "result", "--wait", "h1", "0000000000003333")
	if code != ExitOK || !strings.Contains(out, "reboot web1 on h1 (request 0000000000003333") || !strings.Contains(out, ": ok (running)") {
		t.Fatalf("--wait: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
}
