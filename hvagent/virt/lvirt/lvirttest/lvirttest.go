// Package lvirttest holds what the tests that drive a real libvirtd share:
// opening it under the one skip-or-fail rule (internal/testutil), and a
// tiny QEMU domain of the test's own.
package lvirttest

import (
	"context"
	"fmt"
	"os"
	"testing"

	"libvirt.org/go/libvirt"

	"github.com/ooblab/ooblab/hvagent/virt/lvirt"
	"github.com/ooblab/ooblab/internal/testutil"
)

// tinyDomainXML is a diskless, BIOS-only TCG guest: enough for libvirt and
// QEMU to run it, nothing to boot.
const tinyDomainXML = `<domain type='qemu'>
  <name>%s</name>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='network'/></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
  </devices>
</domain>`

// QEMUSystem opens the real libvirtd for an integration test: URI from
// OOBLAB_LIBVIRT_URI, default qemu:///system. Without QEMU, libvirtd and
// extra tools on PATH, or a libvirtd that answers, the test skips (fails
// under CI); -short skips it. Closed at the test's end.
func QEMUSystem(t testing.TB, ctx context.Context, tools ...string) *lvirt.Libvirt {
	t.Helper()
	testutil.Integration(t, append([]string{"qemu-system-x86_64", "libvirtd"}, tools...)...)
	uri := os.Getenv("OOBLAB_LIBVIRT_URI")
	if uri == "" {
		uri = "qemu:///system"
	}
	l, err := lvirt.Open(ctx, uri)
	if err != nil {
		testutil.Need(t, fmt.Errorf("libvirtd not usable at %s (make test starts it): %w", uri, err))
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// TinyDomain defines a tiny domain named prefix-PID (two test runs may
// share one libvirtd), removing a leftover of an interrupted run first, and
// destroys and undefines it at the test's end.
func TinyDomain(t testing.TB, l *lvirt.Libvirt, prefix string) (string, *libvirt.Domain) {
	t.Helper()
	name := fmt.Sprintf("%s-%d", prefix, os.Getpid())
	if old, err := l.Conn().LookupDomainByName(name); err == nil {
		old.Destroy()
		old.Undefine()
		old.Free()
	}
	d, err := l.Conn().DomainDefineXML(fmt.Sprintf(tinyDomainXML, name))
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
	return name, d
}
