package ctl

import (
	"bufio"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSignalAgent plays ooblab-init's end of the control line: SignalAgent
// sends one "hvagent SIG" line and returns the pid of the "ok" answer,
// skipping leftovers of earlier answers; "err" answers are errors; only TERM
// and KILL are sent at all.
func TestSignalAgent(t *testing.T) {
	dir := t.TempDir()
	run := filepath.Join(dir, "h1", "qemu")
	if err := os.MkdirAll(run, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := saveState(dir, &State{Hosts: []HostState{{Name: "h1", RunDir: run}}}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", filepath.Join(run, labctlSock))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			line, _ := bufio.NewReader(c).ReadString('\n')
			got <- strings.TrimSpace(line)
			if strings.HasSuffix(line, "KILL\n") {
				c.Write([]byte("err no hvagent running\n"))
			} else {
				c.Write([]byte("\x00 noise\nok pid=42\n")) // a leftover first
			}
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pid, err := SignalAgent(ctx, dir, "h1", syscall.SIGTERM)
	if err != nil || pid != 42 {
		t.Fatalf("TERM: pid %d, %v", pid, err)
	}
	if l := <-got; l != "hvagent TERM" {
		t.Fatalf("sent %q", l)
	}
	if _, err := SignalAgent(ctx, dir, "h1", syscall.SIGKILL); err == nil || !strings.Contains(err.Error(), "no hvagent running") {
		t.Fatalf("KILL with no agent: %v", err)
	}
	if _, err := SignalAgent(ctx, dir, "h1", syscall.SIGHUP); err == nil {
		t.Fatal("SIGHUP sent")
	}
	if _, err := SignalAgent(ctx, dir, "h2", syscall.SIGTERM); err == nil {
		t.Fatal("unknown host accepted")
	}
}
