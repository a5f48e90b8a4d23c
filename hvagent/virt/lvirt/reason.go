package lvirt

import "libvirt.org/go/libvirt"

// Reason texts per state, indexed by libvirt's reason number, as
// "virsh domstate --reason" spells them (tools/virsh-domain-monitor.c).
var reasonTexts = map[libvirt.DomainState][]string{
	libvirt.DOMAIN_NOSTATE: {"unknown"},
	libvirt.DOMAIN_RUNNING: {"unknown", "booted", "migrated", "restored", "from snapshot", "unpaused",
		"migration canceled", "save canceled", "event wakeup", "crashed", "post-copy", "post-copy failed"},
	libvirt.DOMAIN_BLOCKED: {"unknown"},
	libvirt.DOMAIN_PAUSED: {"unknown", "user", "migrating", "saving", "dumping", "I/O error", "watchdog",
		"from snapshot", "shutting down", "creating snapshot", "crashed", "starting up", "post-copy",
		"post-copy failed", "api error"},
	libvirt.DOMAIN_SHUTDOWN:    {"unknown", "user"},
	libvirt.DOMAIN_SHUTOFF:     {"unknown", "shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from snapshot", "daemon"},
	libvirt.DOMAIN_CRASHED:     {"unknown", "panicked"},
	libvirt.DOMAIN_PMSUSPENDED: {"unknown"},
}

// reasonText names reason r of state s; "" for unknown, the number for
// one newer than this table.
func reasonText(s libvirt.DomainState, r int) string {
	t := reasonTexts[s]
	if r <= 0 || r >= len(t) {
		if r <= 0 || t == nil {
			return ""
		}
		return "reason " + itoa(r)
	}
	return t[r]
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for ; n > 0; n /= 10 {
		i--
		b[i] = byte('0' + n%10)
	}
	return string(b[i:])
}
