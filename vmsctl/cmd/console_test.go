package cmd

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ooblab/ooblab/bmcsim/bmcsimtest"
	"github.com/ooblab/ooblab/bmcsim/config"
	"github.com/ooblab/ooblab/internal/testutil"
)

func TestEscapeReader(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"ls\r", "ls\r"},
		{"~.", ""},                     // at the session's start
		{"ls\r~.after", "ls\r"},        // at a line's start
		{"a~.b", "a~.b"},               // mid-line: plain keys
		{"~~.", "~."},                  // doubled: one ~, then a plain '.'
		{"~x\r~.", "~x\r"},             // ~ and another key both go through
		{"echo hi\n~.\r", "echo hi\n"}, // \n starts a line too
		{"\r~~\r~.", "\r~\r"},          // ~~ sends one ~
		{"x~", "x~"},                   // a trailing mid-line ~
		{"\r~", "\r"},                  // an escape cut by EOF is dropped
	} {
		got, err := io.ReadAll(newEscapeReader(strings.NewReader(tt.in), '~'))
		if err != nil {
			t.Fatalf("%q: %v", tt.in, err)
		}
		if string(got) != tt.want {
			t.Errorf("%q: got %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestHostConsole: vmsctl host console against an in-process bmcsim whose
// serial port a fake QEMU holds: with only the OOB-I's OPERATOR account in
// the inventory it is refused (SOL needs ADMINISTRATOR) with a message
// naming bmc.console_user; with the console account, host output reaches
// stdout, typed keys the host, ~. quits and frees the port; a second
// console is refused while one is up, and --force takes it over.
func TestHostConsole(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test (in-process BMC over loopback, seconds): skipped by -short")
	}
	b := bmcsimtest.Start(t, bmcsimtest.Options{NoKCS: true, Logger: testutil.Logger(t),
		Users: []config.User{{Name: "op", Password: "op-secret-1", Privilege: "operator"},
			{Name: "admin", Password: "admin-secret-1", Privilege: "administrator"}}})
	r := newRig(t)
	r.useBMC(t, b.LAN)
	qemu, err := net.Dial("tcp", b.SerialAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer qemu.Close()
	typed := &testutil.SyncBuffer{}
	go func() { _, _ = io.Copy(typed, qemu) }()
	eventually(t, "QEMU's serial connection seen", b.Serial.Connected)

	console := func(args ...string) (keys *io.PipeWriter, out *testutil.SyncBuffer, done chan int) {
		pr, pw := io.Pipe()
		out, errs := &testutil.SyncBuffer{}, &testutil.SyncBuffer{}
		a := &App{In: pr, Out: out, Err: errs, Getenv: func(string) string { return "" }}
		done = make(chan int, 1)
		go func() {
			done <- a.Run(context.Background(), append([]string{"--inventory", r.inv, "host", "console", "h1"}, args...))
			t.Logf("vmsctl host console %v: stderr %q", args, errs.String())
		}()
		return pw, out, done
	}
	_, _, opOnly := console()
	select {
	case code := <-opOnly:
		if code == 0 {
			t.Errorf("host console as the OPERATOR account exited 0")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("host console as the OPERATOR account did not give up")
	}
	if b.Serial.Attached() {
		t.Fatal("the OPERATOR account attached the console")
	}
	r.useConsole(t, "admin", "admin-secret-1")

	keys, out, done := console()
	eventually(t, "the console attached", b.Serial.Attached)
	if _, err := qemu.Write([]byte("\r\nh1 login: ")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the login prompt on stdout", func() bool { return strings.Contains(out.String(), "h1 login: ") })
	if _, err := keys.Write([]byte("root\r")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the typed line at the host", func() bool { return strings.Contains(typed.String(), "root\r") })

	// One console per host.
	_, _, refused := console()
	select {
	case code := <-refused:
		if code == 0 {
			t.Errorf("a second console exited 0 while the first is up")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a second console did not give up")
	}
	// ~. quits and deactivates.
	if _, err := keys.Write([]byte("~.")); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("console exit %d after ~.", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("~. did not end the console")
	}
	eventually(t, "the port freed", func() bool { return !b.Serial.Attached() })

	// --force takes a held console over.
	_, _, first := console()
	eventually(t, "the console attached", b.Serial.Attached)
	keys2, out2, second := console("--force")
	select {
	case code := <-first:
		t.Logf("the taken-over console exited %d", code)
	case <-time.After(30 * time.Second):
		t.Fatal("the taken-over console kept running")
	}
	if _, err := qemu.Write([]byte("taken over\r\n")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "output at the new console", func() bool { return strings.Contains(out2.String(), "taken over") })
	_, _ = keys2.Write([]byte("~."))
	<-second
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
