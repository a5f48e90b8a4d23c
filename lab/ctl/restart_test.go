package ctl

import (
	"bufio"
	"context"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSignalAgent plays the guest's end of the lab shell (ttyS1 on
// shell.sock): SignalAgent sends one script that kills the supervised
// hvagent with the asked signal and returns the pid it printed; a failing
// script is an error; only TERM and KILL are sent at all.
func TestSignalAgent(t *testing.T) {
	dir := t.TempDir()
	run := filepath.Join(dir, "h1", "qemu")
	if err := os.MkdirAll(run, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := saveState(dir, &State{Hosts: []HostState{{Name: "h1", RunDir: run}}}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", filepath.Join(run, "shell.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	markRE := regexp.MustCompile(`^echo '(@ooblab-exec [0-9a-f]+) begin'; \( (.*)$`)
	got := make(chan string, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			line, _ := bufio.NewReader(c).ReadString('\n')
			m := markRE.FindStringSubmatch(strings.TrimSpace(line))
			if m == nil {
				got <- "bad framing: " + line
				c.Close()
				continue
			}
			got <- m[2]
			if strings.Contains(m[2], "kill -s KILL") {
				c.Write([]byte(m[1] + " begin\n" + m[1] + " rc=1\n")) // no agent running
			} else {
				c.Write([]byte("leftover\n" + m[1] + " begin\npid=42\n" + m[1] + " rc=0\n"))
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
	if s := <-got; !strings.Contains(s, `kill -s TERM "$pid"`) || !strings.Contains(s, "/run/hvagent.pid") {
		t.Fatalf("sent %q", s)
	}
	if _, err := SignalAgent(ctx, dir, "h1", syscall.SIGKILL); err == nil || !strings.Contains(err.Error(), "no hvagent running") {
		t.Fatalf("KILL with no agent: %v", err)
	}
	<-got
	if _, err := SignalAgent(ctx, dir, "h1", syscall.SIGHUP); err == nil {
		t.Fatal("SIGHUP sent")
	}
	if _, err := SignalAgent(ctx, dir, "h2", syscall.SIGTERM); err == nil {
		t.Fatal("unknown host accepted")
	}
}
