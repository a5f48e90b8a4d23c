package config

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
)

// MaxFleet bounds --fleet: one process, one port per BMC (two with a system
// interface), below the 65535 ports of one address.
const MaxFleet = 10000

// Fleet expands base into n BMCs for `bmcsim --fleet N`: BMC i (0-based) is
// named NAME-i (NAME-0 … NAME-(n-1)), listens for RMCP+ on base.LAN's port +
// i, for Redfish (when base.Redfish is set) on its port + i and, when
// base.KCS is set, for QEMU's chardev on base.KCS's port + i. A
// state folder, when given, gets one sub-folder per BMC so the queue journals
// stay apart. Users and knobs are shared; each BMC still has its own
// sessions, lockouts, SEL and queues.
func Fleet(base Config, n int) ([]Config, error) {
	if n < 1 || n > MaxFleet {
		return nil, fmt.Errorf("--fleet %d: want 1..%d BMCs", n, MaxFleet)
	}
	lanHost, lanPort, err := splitPort("lan", base.LAN, n)
	if err != nil {
		return nil, err
	}
	var kcsHost string
	var kcsPort int
	if base.KCS != "" {
		if kcsHost, kcsPort, err = splitPort("kcs", base.KCS, n); err != nil {
			return nil, err
		}
		if kcsHost == lanHost && kcsPort < lanPort+n && lanPort < kcsPort+n {
			// UDP and TCP ports do not clash, but one range for both is a
			// typo more often than a plan; refuse it plainly.
			return nil, fmt.Errorf("--fleet %d: LAN ports %d-%d overlap KCS ports %d-%d", n, lanPort, lanPort+n-1, kcsPort, kcsPort+n-1)
		}
	}
	var rfHost string
	var rfPort int
	if base.Redfish != "" {
		if rfHost, rfPort, err = splitPort("redfish", base.Redfish, n); err != nil {
			return nil, err
		}
	}
	name := base.Name
	if name == "" {
		name = "bmc"
	}
	if base.Serial != "" {
		return nil, fmt.Errorf("--fleet %d: --serial names one port; give each BMC its serial port in --config", n)
	}
	out := make([]Config, n)
	for i := range out {
		c := base
		c.Name = name + "-" + strconv.Itoa(i)
		c.LAN = net.JoinHostPort(lanHost, strconv.Itoa(lanPort+i))
		if base.KCS != "" {
			c.KCS = net.JoinHostPort(kcsHost, strconv.Itoa(kcsPort+i))
		}
		if base.Redfish != "" {
			c.Redfish = net.JoinHostPort(rfHost, strconv.Itoa(rfPort+i))
		}
		if base.State != "" {
			c.State = filepath.Join(base.State, c.Name)
		}
		c.Users = append([]User(nil), base.Users...)
		c.CipherSuites = append([]int(nil), base.CipherSuites...)
		out[i] = c
	}
	return out, nil
}

// splitPort parses HOST:PORT with a fixed PORT that leaves room for n ports.
func splitPort(what, addr string, n int) (string, int, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("--fleet: %s address %q: %w", what, addr, err)
	}
	p, err := strconv.Atoi(ps)
	if err != nil || p < 1 {
		return "", 0, fmt.Errorf("--fleet: %s address %q: want a fixed port (BMC i listens on PORT+i)", what, addr)
	}
	if p+n-1 > 65535 {
		return "", 0, fmt.Errorf("--fleet %d: %s ports %d-%d run past 65535", n, what, p, p+n-1)
	}
	return host, p, nil
}
