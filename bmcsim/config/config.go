// Package config is bmcsim's configuration: the TOML file of one process,
// one BMC's Config with its defaults and checks, the --user flag, and the
// --fleet expansion of one Config into N BMCs on consecutive ports.
package config

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/bougou/go-ipmi/pkg/bmc"

	"github.com/ooblab/ooblab/internal/fileio"
	"github.com/ooblab/ooblab/internal/oem"
)

// DefaultIANA is the enterprise number IANA reserves for documentation
// (RFC 5612); ooblab's OEM commands carry it unless configured otherwise.
const DefaultIANA = 32473

// DefaultManufacturerID is the manufacturer Get Device ID reports unless
// configured: 49622, the OpenBMC project's enterprise number (ipmitool and
// FreeIPMI name it), a real one that no vendor-specific client quirk keys on.
const DefaultManufacturerID = oem.DefaultManufacturerID

// File is the TOML configuration of one bmcsim process: several BMCs may
// share it.
//
//	metrics = "127.0.0.1:9120"
//	[[bmc]]
//	name = "h1"
//	lan  = "127.0.0.1:6230"
//	kcs  = "127.0.0.1:9002"
//	[[bmc.user]]
//	name = "admin"
//	password_file = "/etc/ooblab/h1-admin.pw"
//	privilege = "administrator"
type File struct {
	Metrics string `toml:"metrics"`
	// Pprof serves Go's profiler under /debug/pprof/ on the metrics address.
	Pprof bool `toml:"pprof"`
	// Admin is the unix socket of the simulation control (bmcsim/admin:
	// pin sensor readings); empty means none.
	Admin string   `toml:"admin"`
	BMCs  []Config `toml:"bmc"`
}

// Config describes one simulated BMC.
type Config struct {
	Name string `toml:"name"`
	// LAN is the UDP address of the IPMI-over-LAN (RMCP+) channel.
	LAN string `toml:"lan"`
	// KCS is the TCP address QEMU's ipmi-bmc-extern chardev connects to;
	// empty means no system interface.
	KCS string `toml:"kcs"`
	// QMP is the unix socket of the QEMU monitor of the managed system;
	// with it chassis power on works (system_reset + cont) and the power
	// state is read from QEMU. Without it power follows the KCS connection.
	QMP string `toml:"qmp"`
	// QEMUPidFile is the managed system's QEMU -pidfile: its sensors
	// (bmcsim/sensors) follow that process's CPU use. Without it they
	// follow the power state alone.
	QEMUPidFile string `toml:"qemu_pidfile"`
	// Serial is the TCP address QEMU's serial chardev (ttyS0) connects to,
	// carried as Serial-over-LAN (bmcsim/sol); empty means no SOL.
	Serial string `toml:"serial"`
	// SOLPrivilege is the least privilege that may activate SOL
	// ("administrator" unless set; SOL configuration parameter 2): the
	// host's serial console is a root login prompt and hvagent's logs.
	SOLPrivilege string `toml:"sol_privilege"`
	// SOLIdleTimeout deactivates a SOL session after this long without a
	// byte either way (default 30m). A console that goes silent loses its
	// SOL sooner, with its RMCP+ session (session_timeout).
	SOLIdleTimeout Duration `toml:"sol_idle_timeout"`
	// SystemInterfaceAdmin lets the system interface (the host's KCS,
	// /dev/ipmi0) run the commands that change LAN users, channel access,
	// LAN or SOL configuration, or erase the SEL. Off by default: a host
	// process cannot lock the VMS out of the BMC nor wipe its alerts
	// (bmcsim/kcs.AdminCommand lists them; they are answered 0xD4).
	SystemInterfaceAdmin bool `toml:"system_interface_admin"`
	// Redfish is the TCP address of the Redfish service (HTTPS only;
	// bmcsim/redfish); empty means none.
	Redfish string `toml:"redfish"`
	// RedfishCert and RedfishKey are PEM files of the Redfish service's
	// certificate and key; without them bmcsim makes a self-signed ECDSA
	// certificate at start and logs its SHA-256 fingerprint.
	RedfishCert string `toml:"redfish_cert"`
	RedfishKey  string `toml:"redfish_key"`
	// State is a folder for the queue journal; empty keeps queues in memory.
	State string `toml:"state"`
	// FaultHooks (tests only; needs state) lets a test kill this BMC at a
	// chosen point: while the file <state>/fault-kill-in-queue1-write
	// exists, the next Write Queue 1 removes it, lands in the journal and
	// SIGKILLs bmcsim before it is answered (`lab restart bmcsim --in
	// queue1-write`). Off by default.
	FaultHooks bool `toml:"fault_hooks"`
	// IANA is the enterprise number of the OEM queue commands.
	IANA uint32 `toml:"iana"`
	// ManufacturerID is the IANA enterprise number Get Device ID reports
	// (default DefaultManufacturerID).
	ManufacturerID uint32 `toml:"manufacturer_id"`

	Users []User `toml:"user"`

	// CipherSuites are the RMCP+ suites offered; only 3 and 17 are allowed.
	CipherSuites []int `toml:"cipher_suites"`

	SessionLimit   int      `toml:"session_limit"`
	SessionTimeout Duration `toml:"session_timeout"`
	// SessionUserLimit and SessionSourceLimit cap the sessions (and
	// handshakes past RAKP 1) one user name and one source IP address may
	// hold (0: half of session_limit). SessionReserved slots are kept for
	// users whose channel privilege is operator or above (0: a quarter of
	// session_limit). HandshakeSourceLimit caps the half-open handshakes
	// (Open Session without a completed RAKP) of one source IP (default 8).
	SessionUserLimit     int `toml:"session_user_limit"`
	SessionSourceLimit   int `toml:"session_source_limit"`
	SessionReserved      int `toml:"session_reserved"`
	HandshakeSourceLimit int `toml:"handshake_source_limit"`
	// LockoutAttempts is IPMI's Bad Password Threshold (LAN parameter 26):
	// failed or unfinished handshakes from one source before its RAKP 1s
	// wait a backoff, and of one user before its slowdown begins. bmcsim
	// never locks a user out: see docs/bmcsim.md, "LAN login accounting".
	LockoutAttempts int `toml:"lockout_attempts"`
	// LockoutDuration is the User Lockout Interval (parameter 26): how
	// long a user stays slowed down after its threshold was reached.
	LockoutDuration Duration `toml:"lockout_duration"`
	// AttemptResetInterval is the Attempt Count Reset Interval (parameter
	// 26): failures are forgotten this long after the last attempt.
	AttemptResetInterval Duration `toml:"attempt_reset_interval"`
	// LoginBackoffMax bounds every wait a login can be made to do: the
	// longest a source's backoff or a user's slowdown refuses one RAKP 1.
	LoginBackoffMax Duration `toml:"login_backoff_max"`
	// AuthTimeout is how long a handshake may take: RAKP 1 to RAKP 4
	// before it counts as abandoned, Open Session to RAKP 4 before its
	// half-open session is closed (docs/bmcsim.md).
	AuthTimeout Duration `toml:"auth_timeout"`
	// SourceHandshakeLimit is how many RAKP 1s naming an unknown user or
	// repeated on a pending handshake one source IP address may send per
	// minute before its RAKP 1s are refused (RAKP 2 status 01h) until the
	// budget refills. A working client never sends any.
	SourceHandshakeLimit int `toml:"source_handshake_limit"`
	// QueueCapacity is the size of each OOB-I queue in records;
	// Queue1Capacity and Queue2Capacity override it for one queue.
	QueueCapacity  int `toml:"queue_capacity"`
	Queue1Capacity int `toml:"queue1_capacity"`
	Queue2Capacity int `toml:"queue2_capacity"`
	// ReaderTTL: a Queue 2 reader (a VMS requester id) that has not read
	// for this long is forgotten and the records addressed to it evicted
	// (0: bmcsim/queue's default, 1 min).
	ReaderTTL Duration `toml:"reader_ttl"`
	// FollowerTTL: a Queue 2 reader that follows the alert log as a
	// durable follower (vmsctl alerts --follower-id) keeps its cursor this
	// long without reading (0: bmcsim/queue's default, 24 h); any other
	// follower is forgotten after ReaderTTL.
	FollowerTTL Duration `toml:"follower_ttl"`
}

// User is one BMC account.
type User struct {
	Name         string `toml:"name"`
	Password     string `toml:"password"`
	PasswordFile string `toml:"password_file"`
	Privilege    string `toml:"privilege"`
}

// Duration reads "30s"-style durations from TOML.
type Duration struct{ time.Duration }

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// Defaults of the safety knobs.
const (
	DefaultSessionLimit    = 32
	DefaultSessionTimeout  = 60 * time.Second
	DefaultSOLIdleTimeout  = 30 * time.Minute
	DefaultSOLPrivilege    = "administrator"
	DefaultLockoutAttempts = 5
	DefaultLockoutDuration = 60 * time.Second
	DefaultAttemptReset    = 60 * time.Second
	DefaultLoginBackoffMax = 4 * time.Second
	// MaxLoginBackoff is the bound of login_backoff_max: a wait longer
	// than this would be a lockout by another name.
	MaxLoginBackoff             = 10 * time.Second
	DefaultHandshakeSourceLimit = 8
	DefaultQueueCapacity        = 1024
	DefaultAuthTimeout          = 3 * time.Second
	// DefaultSourceHandshakeLimit refills one handshake every 3 s.
	DefaultSourceHandshakeLimit = 20
)

// LoadFile reads a TOML configuration.
func LoadFile(path string) (*File, error) {
	var f File
	md, err := toml.DecodeFile(path, &f)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return nil, fmt.Errorf("config %s: unknown keys %v", path, und)
	}
	for _, b := range f.BMCs {
		for _, u := range b.Users {
			if u.Password == "" {
				continue
			}
			// A password in the file makes the file a secret.
			if _, err := fileio.ReadSecret(path); err != nil {
				return nil, fmt.Errorf("config %s holds user %s's password: %w (or move it to a password_file)", path, u.Name, err)
			}
			return &f, nil
		}
	}
	return &f, nil
}

// ParseUserFlag parses --user NAME:@FILE[:PRIVILEGE]: the password is read
// from FILE (mode 0600), so it never appears in the process list. A
// password given in the flag itself is refused.
func ParseUserFlag(s string) (User, error) {
	name, rest, ok := strings.Cut(s, ":")
	if !ok {
		return User{}, fmt.Errorf("--user %q: want NAME:@PASSWORD_FILE[:administrator|operator|user]", name)
	}
	u := User{Name: name, Privilege: "administrator"}
	if i := strings.LastIndex(rest, ":"); i >= 0 {
		if _, err := ParsePrivilege(rest[i+1:]); err == nil {
			u.Privilege = rest[i+1:]
			rest = rest[:i]
		}
	}
	file, ok := strings.CutPrefix(rest, "@")
	if !ok || file == "" {
		// Say nothing of rest: it may be the password.
		return User{}, fmt.Errorf("--user %s:…: a password in the command line shows in the process list; write it to a file (mode 0600) and give --user %s:@FILE", name, name)
	}
	u.PasswordFile = file
	return u, nil
}

// ParsePrivilege maps a privilege name to its IPMI level.
func ParsePrivilege(s string) (bmc.PrivilegeLevel, error) {
	switch strings.ToLower(s) {
	case "administrator", "admin":
		return bmc.PrivilegeLevelAdministrator, nil
	case "operator":
		return bmc.PrivilegeLevelOperator, nil
	case "user":
		return bmc.PrivilegeLevelUser, nil
	}
	return 0, fmt.Errorf("unknown privilege %q (want administrator, operator or user)", s)
}

// ErrNoUsers is returned when a BMC has no account: bmcsim has no default
// credentials.
var ErrNoUsers = errors.New("no BMC user configured: give --user NAME:@PASSWORD_FILE[:PRIVILEGE] or users in --config (bmcsim has no default credentials)")

// Normalize fills defaults and validates c. It reads password files.
func (c *Config) Normalize() error {
	if c.Name == "" {
		c.Name = "bmc0"
	}
	if c.LAN == "" {
		return fmt.Errorf("bmc %s: no LAN address (--lan HOST:PORT)", c.Name)
	}
	if _, _, err := net.SplitHostPort(c.LAN); err != nil {
		return fmt.Errorf("bmc %s: lan address %q: %w", c.Name, c.LAN, err)
	}
	if c.KCS != "" {
		if _, _, err := net.SplitHostPort(c.KCS); err != nil {
			return fmt.Errorf("bmc %s: kcs address %q: %w", c.Name, c.KCS, err)
		}
	}
	if c.Serial != "" {
		if _, _, err := net.SplitHostPort(c.Serial); err != nil {
			return fmt.Errorf("bmc %s: serial address %q: %w", c.Name, c.Serial, err)
		}
	}
	if c.Redfish != "" {
		if _, _, err := net.SplitHostPort(c.Redfish); err != nil {
			return fmt.Errorf("bmc %s: redfish address %q: %w", c.Name, c.Redfish, err)
		}
	}
	if (c.RedfishCert == "") != (c.RedfishKey == "") {
		return fmt.Errorf("bmc %s: redfish_cert and redfish_key go together", c.Name)
	}
	if c.SOLPrivilege == "" {
		c.SOLPrivilege = DefaultSOLPrivilege
	}
	if _, err := ParsePrivilege(c.SOLPrivilege); err != nil {
		return fmt.Errorf("bmc %s: sol_privilege: %w", c.Name, err)
	}
	if c.SOLIdleTimeout.Duration == 0 {
		c.SOLIdleTimeout.Duration = DefaultSOLIdleTimeout
	}
	if c.FaultHooks && c.State == "" {
		return fmt.Errorf("bmc %s: fault_hooks needs state (the hook's file lives there)", c.Name)
	}
	if c.SOLIdleTimeout.Duration < 0 {
		return fmt.Errorf("bmc %s: sol_idle_timeout %v is negative", c.Name, c.SOLIdleTimeout.Duration)
	}
	if c.IANA == 0 {
		c.IANA = DefaultIANA
	}
	if c.IANA > 0xFFFFFF {
		return fmt.Errorf("bmc %s: IANA number %d does not fit 3 bytes", c.Name, c.IANA)
	}
	if c.ManufacturerID == 0 {
		c.ManufacturerID = DefaultManufacturerID
	}
	if c.ManufacturerID > 0xFFFFF {
		return fmt.Errorf("bmc %s: manufacturer_id %d does not fit 20 bits", c.Name, c.ManufacturerID)
	}
	if len(c.CipherSuites) == 0 {
		c.CipherSuites = []int{17, 3}
	}
	for _, s := range c.CipherSuites {
		if s != 3 && s != 17 {
			return fmt.Errorf("bmc %s: cipher suite %d not allowed (only 17 and 3: suite 0 has no authentication)", c.Name, s)
		}
	}
	if c.SessionLimit == 0 {
		c.SessionLimit = DefaultSessionLimit
	}
	if c.SessionLimit < 1 || c.SessionLimit > 63 {
		return fmt.Errorf("bmc %s: session limit %d out of range 1..63", c.Name, c.SessionLimit)
	}
	if c.SessionTimeout.Duration == 0 {
		c.SessionTimeout.Duration = DefaultSessionTimeout
	}
	if err := c.normalizeLogins(); err != nil {
		return err
	}
	if c.QueueCapacity == 0 {
		c.QueueCapacity = DefaultQueueCapacity
	}
	if c.Queue1Capacity == 0 {
		c.Queue1Capacity = c.QueueCapacity
	}
	if c.Queue2Capacity == 0 {
		c.Queue2Capacity = c.QueueCapacity
	}
	if len(c.Users) == 0 {
		return fmt.Errorf("bmc %s: %w", c.Name, ErrNoUsers)
	}
	if len(c.Users) > 14 {
		return fmt.Errorf("bmc %s: %d users; at most 14 fit the user table", c.Name, len(c.Users))
	}
	seen := map[string]bool{}
	for i := range c.Users {
		u := &c.Users[i]
		if u.Name == "" {
			return fmt.Errorf("bmc %s: user %d has no name (anonymous and null users are refused)", c.Name, i+1)
		}
		if len(u.Name) > 16 {
			return fmt.Errorf("bmc %s: user name %q longer than 16 bytes", c.Name, u.Name)
		}
		if seen[u.Name] {
			return fmt.Errorf("bmc %s: user %q given twice", c.Name, u.Name)
		}
		seen[u.Name] = true
		if u.PasswordFile != "" {
			b, err := fileio.ReadSecret(u.PasswordFile) // refuses a file others may read
			if err != nil {
				return fmt.Errorf("bmc %s: user %s: password file: %w", c.Name, u.Name, err)
			}
			u.Password = strings.TrimRight(string(b), "\r\n")
		}
		if u.Password == "" {
			return fmt.Errorf("bmc %s: user %s has an empty password", c.Name, u.Name)
		}
		if len(u.Password) > 20 {
			return fmt.Errorf("bmc %s: user %s: password longer than 20 bytes (the IPMI v2.0 limit)", c.Name, u.Name)
		}
		if u.Privilege == "" {
			u.Privilege = "administrator"
		}
		if _, err := ParsePrivilege(u.Privilege); err != nil {
			return fmt.Errorf("bmc %s: user %s: %w", c.Name, u.Name, err)
		}
	}
	return nil
}

// normalizeLogins fills and checks the LAN login and session-slot knobs.
func (c *Config) normalizeLogins() error {
	if c.LockoutAttempts == 0 {
		c.LockoutAttempts = DefaultLockoutAttempts
	}
	if c.LockoutAttempts < 0 || c.LockoutAttempts > 255 {
		return fmt.Errorf("bmc %s: lockout_attempts %d out of range 1..255", c.Name, c.LockoutAttempts)
	}
	def := func(d *Duration, v time.Duration, key string) error {
		if d.Duration == 0 {
			d.Duration = v
		}
		if d.Duration < 0 {
			return fmt.Errorf("bmc %s: %s %v is negative", c.Name, key, d.Duration)
		}
		return nil
	}
	for _, k := range []struct {
		d   *Duration
		v   time.Duration
		key string
	}{
		{&c.LockoutDuration, DefaultLockoutDuration, "lockout_duration"},
		{&c.AttemptResetInterval, DefaultAttemptReset, "attempt_reset_interval"},
		{&c.LoginBackoffMax, DefaultLoginBackoffMax, "login_backoff_max"},
		{&c.AuthTimeout, DefaultAuthTimeout, "auth_timeout"},
	} {
		if err := def(k.d, k.v, k.key); err != nil {
			return err
		}
	}
	if c.LoginBackoffMax.Duration > MaxLoginBackoff {
		return fmt.Errorf("bmc %s: login_backoff_max %v over %v: a longer wait is a lockout, which anyone who knows a user name could impose", c.Name, c.LoginBackoffMax.Duration, MaxLoginBackoff)
	}
	if c.SourceHandshakeLimit == 0 {
		c.SourceHandshakeLimit = DefaultSourceHandshakeLimit
	}
	if c.SourceHandshakeLimit < 0 {
		return fmt.Errorf("bmc %s: source_handshake_limit %d is negative", c.Name, c.SourceHandshakeLimit)
	}
	half := max(1, c.SessionLimit/2)
	for _, k := range []struct {
		n       *int
		def, hi int
		key     string
	}{
		{&c.SessionUserLimit, half, c.SessionLimit, "session_user_limit"},
		{&c.SessionSourceLimit, half, c.SessionLimit, "session_source_limit"},
		{&c.SessionReserved, c.SessionLimit / 4, c.SessionLimit - 1, "session_reserved"},
		{&c.HandshakeSourceLimit, min(DefaultHandshakeSourceLimit, c.SessionLimit), c.SessionLimit, "handshake_source_limit"},
	} {
		if *k.n == 0 {
			*k.n = k.def
		}
		if *k.n < 0 || *k.n > k.hi {
			return fmt.Errorf("bmc %s: %s %d out of range 0..%d", c.Name, k.key, *k.n, k.hi)
		}
	}
	return nil
}
