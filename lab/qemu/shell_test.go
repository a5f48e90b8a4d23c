package qemu

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// shellGuest serves dir/shell.sock as the lab's guest does on ttyS1: each
// connection's bytes go to a fresh /bin/sh, its output comes back. The
// first connection is preceded by stale output, as an abandoned call
// leaves on the port.
func shellGuest(t *testing.T, dir string) {
	t.Helper()
	l, err := net.Listen("unix", filepath.Join(dir, "shell.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for first := true; ; first = false {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if first {
				c.Write([]byte("@ooblab-exec 00 rc=0\nleftover from before\n"))
			}
			sh := exec.Command("/bin/sh")
			sh.Stdin, sh.Stdout, sh.Stderr = c, c, c
			_ = sh.Run()
			c.Close()
		}
	}()
}

func TestExec(t *testing.T) {
	dir := t.TempDir()
	shellGuest(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tt := range []struct {
		script, out string
		rc          int
	}{
		{"echo hello; echo to stderr >&2", "hello\nto stderr\n", 0},
		{"printf 'a\\nb\\n'; exit 3", "a\nb\n", 3},
		{"read x; echo read:$x", "read:\n", 0}, // stdin is /dev/null, not the port
		{"false", "", 1},
	} {
		var out strings.Builder
		rc, err := Exec(ctx, dir, tt.script, &out)
		if err != nil || rc != tt.rc || out.String() != tt.out {
			t.Errorf("Exec(%q) = %d, %v, output %q; want %d, %q", tt.script, rc, err, out.String(), tt.rc, tt.out)
		}
	}
}

func TestExecContext(t *testing.T) {
	dir := t.TempDir()
	shellGuest(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	rc, err := Exec(ctx, dir, "sleep 2", &strings.Builder{})
	if err == nil || ctx.Err() == nil || rc != -1 {
		t.Fatalf("Exec past its deadline = %d, %v", rc, err)
	}
	if _, err := Exec(context.Background(), t.TempDir(), "true", &strings.Builder{}); err == nil {
		t.Fatal("Exec without a shell socket succeeded")
	}
}
