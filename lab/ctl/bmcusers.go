package ctl

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/ooblab/ooblab/internal/inventory"
)

// labBMCUser is one account of every lab BMC; its password is hN/<passwordFile>.
type labBMCUser struct {
	name, privilege, passwordFile string
}

// labBMCUsers are the lab BMCs' accounts, each at the least privilege its
// job needs:
//   - vms, OPERATOR: the VMS's OOB-I (the queues need operator, and its
//     queue 2 readers are bound to it), vmsctl host power and host sel;
//   - admin, ADMINISTRATOR: the serial console (SOL is administrator by
//     default: vmsctl host console uses it as the inventory's console_user)
//     and the README tour's ipmitool commands.
var labBMCUsers = []labBMCUser{
	{name: "vms", privilege: "operator", passwordFile: "bmc-vms.password"},
	{name: "admin", privilege: "administrator", passwordFile: "bmc-admin.password"},
}

// hostBMCConfig is host hs's [[bmc]] table of bmcsim.toml; hdir is the
// host's folder (hN), where its password files are.
func hostBMCConfig(hs HostState, hdir string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `
[[bmc]]
name = %q
lan = %q
kcs = %q
serial = %q
redfish = %q
redfish_cert = %q
redfish_key = %q
state = %q
qmp = %q
qemu_pidfile = %q
fault_hooks = true
`, hs.Name, hs.BMCLAN, hs.BMCKCS, hs.BMCSerial, hs.BMCRedfish, filepath.Join(hdir, "redfish.pem"), filepath.Join(hdir, "redfish.key"),
		filepath.Join(hdir, "bmc-state"), filepath.Join(hs.RunDir, "qmp-bmc.sock"), filepath.Join(hs.RunDir, "qemu.pid"))
	for _, u := range labBMCUsers {
		fmt.Fprintf(&b, `[[bmc.user]]
name = %q
password_file = %q
privilege = %q
`, u.name, filepath.Join(hdir, u.passwordFile), u.privilege)
	}
	return b.String()
}

// inventoryBMC is host hs's BMC entry in the lab's inventory: the OOB-I as
// vms (OPERATOR), the serial console as admin. Paths are relative to the
// inventory's folder.
func inventoryBMC(hs HostState) inventory.BMC {
	vms, admin := labBMCUsers[0], labBMCUsers[1]
	return inventory.BMC{Addr: hs.BMCLAN,
		User: vms.name, PasswordFile: filepath.Join(hs.Name, vms.passwordFile),
		ConsoleUser: admin.name, ConsolePasswordFile: filepath.Join(hs.Name, admin.passwordFile),
		CipherSuite: 17, IANA: 32473,
		Redfish: "https://" + hs.BMCRedfish, RedfishCAFile: filepath.Join("tls", "ca.pem")}
}
