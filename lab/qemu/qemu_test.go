package qemu

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ooblab/ooblab/internal/testutil"
)

func TestArgs(t *testing.T) {
	c := Config{Name: "h1", Dir: "/run/h1", Machine: "q35", Accel: "tcg", MemoryMiB: 1024, CPUs: 2,
		Kernel: "/k", Initrd: "/i", Append: "console=ttyS0", BaseImage: "/b.qcow2",
		BMCAddr: "127.0.0.1:9002", VMMI: []Forward{{HostPort: 18443, GuestPort: 8443}}}
	got := strings.Join(c.Args(), " ")
	for _, want := range []string{
		"-nodefaults -no-user-config",
		"-machine q35 -accel tcg -m 1024 -smp 2",
		"-chardev socket,id=ipmi0,host=127.0.0.1,port=9002,reconnect=1 -device ipmi-bmc-extern,id=bmc0,chardev=ipmi0 -device isa-ipmi-kcs,bmc=bmc0",
		"-netdev user,id=vmmi,hostfwd=tcp:127.0.0.1:18443-:8443 -device virtio-net-pci,netdev=vmmi,id=vmmi-nic",
		"-qmp unix:/run/h1/qmp.sock,server=on,wait=off",
		"-serial file:/run/h1/console.log",
		"-pidfile /run/h1/qemu.pid",
		"-drive file=/run/h1/root.qcow2,if=virtio,format=qcow2",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("args lack %q\nargs: %s", want, got)
		}
	}
	c.SerialAddr = "127.0.0.1:9003"
	if got := strings.Join(c.Args(), " "); !strings.Contains(got,
		"-chardev socket,id=serial0,host=127.0.0.1,port=9003,reconnect=1,logfile=/run/h1/console.log -serial chardev:serial0") ||
		strings.Contains(got, "-serial file:") {
		t.Errorf("with a BMC serial port, ttyS0 is not its socket chardev logging to console.log: %s", got)
	}
	c.BMCAddr = ""
	if slices.Contains(c.Args(), "isa-ipmi-kcs,bmc=bmc0") {
		t.Error("IPMI devices without a BMC address")
	}
}

func TestFollowFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "console.log")
	if err := os.WriteFile(p, []byte("early\r\nooblab: rootfs up t=1\r\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stop := make(chan struct{})
	// Already there.
	line, err := followFile(ctx, p, stop, func(l string) bool { return strings.HasPrefix(l, "ooblab: rootfs up") })
	if err != nil || line != "ooblab: rootfs up t=1" {
		t.Fatalf("got %q, %v", line, err)
	}
	// Written later, in two pieces.
	go func() {
		f, _ := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
		defer f.Close()
		f.WriteString("ooblab: libvirtd")
		f.Sync()
		f.WriteString(" up t=2\r\n")
	}()
	line, err = followFile(ctx, p, stop, func(l string) bool { return strings.Contains(l, "libvirtd up") })
	if err != nil || line != "ooblab: libvirtd up t=2" {
		t.Fatalf("got %q, %v", line, err)
	}
	// Deadline.
	short, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	if _, err := followFile(short, p, stop, func(string) bool { return false }); err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("err = %v, want deadline", err)
	}
	// Process exit.
	close(stop)
	if _, err := followFile(ctx, p, stop, func(string) bool { return false }); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("err = %v, want exited", err)
	}
}

func TestKVMProbe(t *testing.T) {
	testutil.Integration(t, "qemu-system-x86_64")
	start := time.Now()
	ok, why := ProbeKVM(context.Background(), "")
	took := time.Since(start)
	t.Logf("KVM usable: %v (%s) in %v", ok, why, took)
	if took > KVMProbeTimeout+2*time.Second {
		t.Fatalf("probe took %v", took)
	}
}
