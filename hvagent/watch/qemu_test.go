package watch

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ooblab/ooblab/hvagent/alert"
	"github.com/ooblab/ooblab/hvagent/virt"
)

// TestQEMUSystemVirshDestroy: with a real libvirtd, the agent starts a
// tiny domain (no alert) and a separate "virsh destroy" process stops it
// behind the agent's back (one alert: unauthorized local change). URI from
// OOBLAB_LIBVIRT_URI, default qemu:///system; skips when libvirtd, QEMU or
// virsh is missing.
func TestQEMUSystemVirshDestroy(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the real libvirtd test")
	}
	uri := os.Getenv("OOBLAB_LIBVIRT_URI")
	if uri == "" {
		uri = "qemu:///system"
	}
	if _, err := os.Stat("/usr/bin/qemu-system-x86_64"); err != nil {
		t.Skipf("no QEMU: %v", err)
	}
	virsh, err := exec.LookPath("virsh")
	if err != nil {
		t.Skipf("no virsh: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, err := virt.Open(ctx, uri)
	if err != nil {
		t.Skipf("libvirtd not usable at %s: %v", uri, err)
	}
	defer l.Close()
	// Unique per process: other worktrees run tests on the same libvirtd.
	name := fmt.Sprintf("ooblab-watch-test-%d", os.Getpid())
	d, err := l.Conn().DomainDefineXML(fmt.Sprintf(`<domain type='qemu'>
  <name>%s</name>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='network'/></os>
  <features><acpi/></features>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices>
</domain>`, name))
	if err != nil {
		t.Fatalf("define: %v", err)
	}
	t.Cleanup(func() {
		d.Destroy()
		if err := d.Undefine(); err != nil {
			t.Errorf("undefine: %v", err)
		}
		d.Free()
	})

	alerts := make(chan alert.Alert, 16)
	ready := make(chan struct{})
	done := make(chan error, 1)
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	go func() {
		done <- Run(wctx, Config{Source: l, Host: "hv1", Ready: func() { close(ready) },
			Sink: alert.SinkFunc(func(_ context.Context, a alert.Alert) error {
				if a.VM == name {
					alerts <- a
				}
				return nil
			})})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("watcher: %v", err)
	}
	if _, err := l.Start(ctx, name); err != nil {
		t.Fatalf("agent start: %v", err)
	}
	if out, err := exec.CommandContext(ctx, virsh, "-c", uri, "destroy", name).CombinedOutput(); err != nil {
		t.Fatalf("virsh destroy: %v\n%s", err, out)
	}
	select {
	case a := <-alerts:
		if a.Action != "destroy" || !strings.HasPrefix(a.Reason, string(Local)+":") || a.Principal != "local" {
			t.Fatalf("alert %+v, want an unauthorized local destroy (and none for the agent's start)", a)
		}
		t.Logf("alert: %s", a.Reason)
	case <-ctx.Done():
		t.Fatal("no alert for virsh destroy")
	}
}
