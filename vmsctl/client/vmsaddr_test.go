package client_test

import (
	"testing"

	"github.com/ooblab/ooblab/internal/inventory"
	"github.com/ooblab/ooblab/vmsctl/client"
)

// The VMS's own addresses: the inventory's vms section where set, else the
// source address of the VMS's packets on each path, never the host's.
func TestVMSAddrs(t *testing.T) {
	host := inventory.Host{Name: "h1", VMMI: inventory.VMMI{Addr: "127.0.0.2:7443"}, BMC: inventory.BMC{Addr: "127.0.0.3:623"}}
	for _, tt := range []struct {
		name     string
		vms      inventory.VMS
		host     inventory.Host
		oob, vmm string
	}{
		{"learnt from the paths", inventory.VMS{}, host, "127.0.0.1", "127.0.0.1"},
		{"explicit", inventory.VMS{OOBI: "192.0.2.10", VMMI: "198.51.100.10"}, host, "192.0.2.10", "198.51.100.10"},
		{"one explicit", inventory.VMS{VMMI: "198.51.100.10"}, host, "127.0.0.1", "198.51.100.10"},
		{"no path", inventory.VMS{}, inventory.Host{Name: "h1"}, "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			inv := &inventory.Inventory{Principal: "vms", Hosts: []inventory.Host{tt.host}, VMS: tt.vms}
			oob, vmm := client.NewTarget(inv, tt.host, nil).VMSAddrs()
			if oob != tt.oob || vmm != tt.vmm {
				t.Fatalf("VMSAddrs = %q, %q; want %q, %q", oob, vmm, tt.oob, tt.vmm)
			}
		})
	}
}
