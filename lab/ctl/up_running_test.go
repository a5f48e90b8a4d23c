package ctl

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// A second `lab up` on a running lab refuses and leaves it running (it used
// to stop the lab's bmcsim and QEMU on its failure path).
func TestUpLeavesARunningLab(t *testing.T) {
	dir := t.TempDir()
	bmcsim := exec.Command("sleep", "60")
	qemu := exec.Command("sleep", "60")
	for _, c := range []*exec.Cmd{bmcsim, qemu} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Process.Kill(); _ = c.Wait() })
	}
	st := &State{BMCSim: Proc{Pid: bmcsim.Process.Pid},
		Hosts: []HostState{{Name: "h1", QEMU: Proc{Pid: qemu.Process.Pid}}}}
	if err := saveState(dir, st); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	_, err := Up(context.Background(), Options{Dir: dir, Out: &out, BinDir: t.TempDir()}, nil)
	if !errors.Is(err, ErrLabUp) {
		t.Fatalf("Up on a running lab: %v, want ErrLabUp", err)
	}
	for _, pid := range []int{bmcsim.Process.Pid, qemu.Process.Pid} {
		if !processAlive(pid) {
			t.Errorf("pid %d was stopped by the refused lab up; output:\n%s", pid, out.String())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "lab.json")); err != nil {
		t.Errorf("the running lab's state: %v", err)
	}
}

// Only bmcsim gone (QEMU still up) still counts as a running lab.
func TestUpLabWithOnlyQEMUAlive(t *testing.T) {
	dir := t.TempDir()
	qemu := exec.Command("sleep", "60")
	if err := qemu.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = qemu.Process.Kill(); _ = qemu.Wait() })
	if err := saveState(dir, &State{Hosts: []HostState{{Name: "h1", QEMU: Proc{Pid: qemu.Process.Pid}}}}); err != nil {
		t.Fatal(err)
	}
	_, err := Up(context.Background(), Options{Dir: dir, Out: &bytes.Buffer{}, BinDir: t.TempDir()}, nil)
	if !errors.Is(err, ErrLabUp) || !processAlive(qemu.Process.Pid) {
		t.Fatalf("Up: %v; qemu alive %v", err, processAlive(qemu.Process.Pid))
	}
}
