package kcs

import (
	"github.com/bougou/go-ipmi/pkg/types"
)

// The system interface has no session and no user: IPMI gives it the
// channel's full privilege, so any process on the host with /dev/ipmi0
// could change the VMS's BMC password, disable its user or wipe the SEL
// that carries hvagent's alerts. bmcsim refuses the commands that reach
// beyond the host itself with 0xD4 (insufficient privilege) unless the
// BMC is configured with system_interface_admin (WithAdminCommands). What
// hvagent needs (the OEM queue commands, Add SEL Entry, Get Device ID, the
// message queue) is not among them.

// AdminCommand reports whether netfn (a request NetFn) and cmd is one of
// the commands the system interface is refused by default:
//
//	App 40h        Set Channel Access
//	App 43h        Set User Access
//	App 45h        Set User Name
//	App 47h        Set User Password
//	App 4Ch        Set User Payload Access
//	App 56h        Set Channel Security Keys
//	Transport 01h  Set LAN Configuration Parameters
//	Transport 21h  Set SOL Configuration Parameters
//	Storage 46h    Delete SEL Entry
//	Storage 47h    Clear SEL
func AdminCommand(netfn, cmd uint8) bool {
	switch types.NetFn(netfn) {
	case types.NetFnAppRequest:
		switch cmd {
		case 0x40, 0x43, 0x45, 0x47, 0x4C, 0x56:
			return true
		}
	case types.NetFnTransportRequest:
		return cmd == 0x01 || cmd == 0x21
	case types.NetFnStorageRequest:
		return cmd == 0x46 || cmd == 0x47
	}
	return false
}

// WithAdminCommands lets the system interface run the AdminCommand set
// (bmcsim's system_interface_admin; default refused with 0xD4). A real
// BMC's host-side password recovery (`ipmitool user set password` on the
// host) needs it.
func WithAdminCommands(allow bool) Option { return func(s *Server) { s.admin = allow } }
