package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	ipmibmc "github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/handlers"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ooblab/ooblab/bmcsim/bmc"
	"github.com/ooblab/ooblab/bmcsim/queue"
	"github.com/ooblab/ooblab/bmcsim/redfish"
	"github.com/ooblab/ooblab/bmcsim/sensors"
	"github.com/ooblab/ooblab/internal/fileio"
	"github.com/ooblab/ooblab/internal/oem"
	"github.com/ooblab/ooblab/internal/qmp"
)

// lanChannel is the channel number of the LAN channel, whose privilege
// limits give the Redfish roles.
const lanChannel = 1

// redfishBackend is redfish.Backend over one BMC: its IPMI users, chassis
// (power driver, boot flags) and SEL.
type redfishBackend struct {
	b        *bmc.BMC
	queues   *queue.Queues
	log      *slog.Logger
	ipmiPort int
	mon      *qmp.Monitor // nil without QEMU monitor

	mu       sync.Mutex
	cpus     int
	memGiB   float64
	hostRead bool
}

var (
	_ redfish.Backend      = (*redfishBackend)(nil)
	_ redfish.LoginBook    = (*redfishBackend)(nil)
	_ redfish.QueueBackend = (*redfishBackend)(nil)
)

// QueueCommand runs one OOB-I queue command of the LAN side for a Redfish
// caller through the very handler the IPMI OEM command runs (bmcsim/queue):
// as a session of user at the IPMI privilege of role, so Queue 2 readers
// bind to that BMC user as over RMCP+.
func (rb *redfishBackend) QueueCommand(ctx context.Context, cmd uint8, user string, role redfish.Role, data []byte) ([]byte, uint8) {
	priv := map[redfish.Role]ipmibmc.PrivilegeLevel{
		redfish.RoleAdministrator: ipmibmc.PrivilegeLevelAdministrator,
		redfish.RoleOperator:      ipmibmc.PrivilegeLevelOperator,
		redfish.RoleReadOnly:      ipmibmc.PrivilegeLevelUser,
	}[role]
	hctx := &handlers.HandlerContext{Session: &ipmibmc.Session{PrivilegeLevel: priv, User: &ipmibmc.User{Name: user}}}
	resp, cc, err := rb.queues.Handler(oem.Cmd(cmd), oem.IANA(rb.b.Config.IANA)).Handle(ctx, hctx, data)
	if err != nil {
		rb.log.Warn("redfish queue command failed", "cmd", cmd, "user", user, "err", err)
	}
	return resp, uint8(cc)
}

func roleOf(p ipmibmc.PrivilegeLevel) (redfish.Role, bool) {
	switch {
	case p >= ipmibmc.PrivilegeLevelAdministrator && p <= ipmibmc.PrivilegeLevelOEM:
		return redfish.RoleAdministrator, true
	case p == ipmibmc.PrivilegeLevelOperator:
		return redfish.RoleOperator, true
	case p == ipmibmc.PrivilegeLevelUser:
		return redfish.RoleReadOnly, true
	}
	return "", false
}

func (rb *redfishBackend) Accounts() []redfish.Account {
	users := rb.b.IPMI.Users
	var out []redfish.Account
	for id := uint8(2); id <= users.MaxUserCount(); id++ {
		u, err := users.Get(id)
		if err != nil || u.Name == "" {
			continue
		}
		a := u.ChannelAccess[lanChannel]
		role, ok := roleOf(a.MaxPrivilege)
		if !ok {
			continue
		}
		out = append(out, redfish.Account{ID: strconv.Itoa(int(id)), UserName: u.Name, Role: role, Enabled: u.Enabled && a.Enabled})
	}
	return out
}

// dummyUser is checked against when the name is unknown, so both answers
// take the same time.
var dummyUser = &ipmibmc.User{}

func (rb *redfishBackend) Authenticate(name, password string) (redfish.Account, bool) {
	// A password the IPMI user table cannot hold never matches: longer
	// than 20 bytes (only the first 20 would be compared) or with a NUL
	// (the table pads with them).
	valid := len(password) >= 1 && len(password) <= ipmibmc.MaxPasswordLen
	for i := 0; i < len(password); i++ {
		if password[i] == 0 {
			valid = false
		}
	}
	u, err := rb.b.IPMI.Users.FindEnabledByNameOnChannel(name, lanChannel)
	if err != nil || name == "" {
		dummyUser.VerifyPassword([]byte(password))
		return redfish.Account{}, false
	}
	if !u.VerifyPassword([]byte(password)) || !valid || u.Password20 != (len(password) > 16) {
		return redfish.Account{}, false
	}
	a := u.ChannelAccess[lanChannel]
	if a.CallbackOnly {
		return redfish.Account{}, false
	}
	role, ok := roleOf(a.MaxPrivilege)
	if !ok {
		return redfish.Account{}, false
	}
	return redfish.Account{ID: strconv.Itoa(int(u.ID)), UserName: u.Name, Role: role, Enabled: true}, true
}

// known reports whether the user table has name: only those are counted in
// the BMC's login book (its users map is bounded by the table); guesses at
// other names are counted by the Redfish service's own (user, source) book.
func (rb *redfishBackend) known(name string) bool {
	_, err := rb.b.IPMI.Users.GetByName(name)
	return err == nil && name != ""
}

// BeginLogin counts a Redfish login in the BMC's login book, the one
// RMCP+ handshakes count in: one user's failures over both channels.
func (rb *redfishBackend) BeginLogin(user, ip string) (time.Duration, func(ok bool)) {
	if !rb.known(user) {
		return 0, func(bool) {}
	}
	wait, tk := rb.b.BeginLogin(user, ip)
	if wait > 0 {
		return wait, nil
	}
	return 0, func(ok bool) {
		if until := rb.b.EndLogin(user, ip, tk, ok); !until.IsZero() {
			rb.log.Warn("user slowed after failed logins", "user", user, "until", until.Format(time.RFC3339), "last_source", ip, "channel", "redfish")
		}
	}
}

func (rb *redfishBackend) SetPassword(id, password string) error {
	n, err := strconv.Atoi(id)
	if err != nil || n < 2 || n > 63 {
		return fmt.Errorf("user id %q", id)
	}
	return rb.b.IPMI.Users.Update(uint8(n), func(u *ipmibmc.User) error {
		u.SetPassword([]byte(password))
		return nil
	})
}

func (rb *redfishBackend) PowerOn(context.Context) bool { return rb.b.PowerOn() }

// resetActions maps reset types onto Chassis Control actions.
var resetActions = map[redfish.ResetType]byte{
	redfish.ResetOn:               bmc.ChassisPowerUp,
	redfish.ResetForceOff:         bmc.ChassisPowerDown,
	redfish.ResetGracefulShutdown: bmc.ChassisSoftShutdown,
	redfish.ResetForceRestart:     bmc.ChassisHardReset,
	redfish.ResetPowerCycle:       bmc.ChassisPowerCycle,
	redfish.ResetNmi:              bmc.ChassisDiagInterrupt,
}

// Reset runs the Chassis Control action of rt, as ipmitool chassis power
// would (a once-only boot device is used by On, ForceRestart, PowerCycle).
func (rb *redfishBackend) Reset(ctx context.Context, rt redfish.ResetType) error {
	a, ok := resetActions[rt]
	if !ok {
		return fmt.Errorf("reset type %s: %w", rt, redfish.ErrNotSupported)
	}
	err := rb.b.ChassisControl(ctx, a)
	if errors.Is(err, bmc.ErrNoDiag) {
		return fmt.Errorf("%w: %v", redfish.ErrNotSupported, err)
	}
	return err
}

// Boot flags (boot options parameter 5, §28.13 Table 28-14).
const (
	bootValid      = 0x80 // byte 1
	bootPersistent = 0x40
	bootEFI        = 0x20
)

// bootTargets maps Redfish override targets onto IPMI boot device
// selectors (byte 2, bits 5:2).
var bootTargets = map[string]byte{
	"None":      0x0,
	"Pxe":       0x1,
	"Hdd":       0x2,
	"Diags":     0x4,
	"Cd":        0x5,
	"BiosSetup": 0x6,
	"Floppy":    0xF,
}

func (rb *redfishBackend) Boot() redfish.Boot {
	f := rb.b.BootFlags()
	out := redfish.Boot{Target: "None", Enabled: "Disabled", Mode: "Legacy"}
	dev := f[1] >> 2 & 0x0F
	for name, sel := range bootTargets {
		if sel == dev {
			out.Target = name
		}
	}
	if f[0]&bootValid != 0 {
		out.Enabled = "Once"
		if f[0]&bootPersistent != 0 {
			out.Enabled = "Continuous"
		}
	}
	if f[0]&bootEFI != 0 {
		out.Mode = "UEFI"
	}
	return out
}

func (rb *redfishBackend) SetBoot(b redfish.Boot) error {
	sel, ok := bootTargets[b.Target]
	if !ok {
		return fmt.Errorf("boot target %q", b.Target)
	}
	var f [5]byte
	copy(f[:], rb.b.BootFlags())
	f[0] &^= bootValid | bootPersistent | bootEFI
	if b.Enabled != "Disabled" {
		f[0] |= bootValid
	}
	if b.Enabled == "Continuous" {
		f[0] |= bootPersistent
	}
	if b.Mode == "UEFI" {
		f[0] |= bootEFI
	}
	f[1] = f[1]&^0x3C | sel<<2
	rb.b.SetBootFlags(f)
	return nil
}

func (rb *redfishBackend) SEL() [][16]byte { return rb.b.SEL.Entries() }

func (rb *redfishBackend) ClearSEL() error { rb.b.SEL.Clear(); return nil }

func (rb *redfishBackend) Info(ctx context.Context) redfish.Info {
	c := rb.b.Config
	g := rb.b.IPMI.GUID
	cpus, mem := rb.hostSize(ctx)
	return redfish.Info{
		Name:            c.Name,
		UUID:            fmt.Sprintf("%x-%x-%x-%x-%x", g[0:4], g[4:6], g[6:8], g[8:10], g[10:16]),
		FirmwareVersion: "1.0",
		IPMIPort:        rb.ipmiPort,
		SerialConsole:   c.Serial != "",
		IANA:            c.IANA,
		Processors:      cpus,
		MemoryGiB:       mem,
		SELCapacity:     rb.b.SEL.Capacity(),
	}
}

// hostSize asks the QEMU monitor once for the guest's CPUs and memory.
func (rb *redfishBackend) hostSize(ctx context.Context) (int, float64) {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if rb.hostRead || rb.mon == nil {
		return rb.cpus, rb.memGiB
	}
	ctx, cancel := context.WithTimeout(ctx, stateTimeout)
	defer cancel()
	var cpus []struct {
		CPUIndex int `json:"cpu-index"`
	}
	var mem struct {
		BaseMemory int64 `json:"base-memory"`
	}
	if rb.mon.Execute(ctx, "query-cpus-fast", nil, &cpus) == nil &&
		rb.mon.Execute(ctx, "query-memory-size-summary", nil, &mem) == nil {
		rb.cpus, rb.memGiB, rb.hostRead = len(cpus), float64(mem.BaseMemory)/(1<<30), true
	}
	return rb.cpus, rb.memGiB
}

// listenRedfish opens the Redfish listener and builds its service.
func (h *Host) listenRedfish() error {
	b := h.BMC
	c := b.Config
	cert, err := redfishCert(c.Redfish, c.Name, c.RedfishCert, c.RedfishKey)
	if err != nil {
		return fmt.Errorf("bmc %s: redfish certificate: %w", c.Name, err)
	}
	ln, err := net.Listen("tcp", c.Redfish)
	if err != nil {
		return fmt.Errorf("bmc %s: redfish listener: %w", c.Name, err)
	}
	rb := &redfishBackend{b: b, queues: h.Queues, log: h.log, ipmiPort: h.LANAddr().Port}
	if hp, ok := h.powerDriver.(*hostPower); ok {
		rb.mon = hp.mon
	}
	svc := redfish.New(rb, redfish.Options{
		Logger:          h.log,
		LockoutAttempts: c.LockoutAttempts,
		LockoutDuration: c.LockoutDuration.Duration,
		HTTPSPort:       ln.Addr().(*net.TCPAddr).Port,
	})
	iana := c.IANA
	b.SEL.SetOnAdd(func(rec [16]byte) { svc.NotifySEL(rec, iana) })
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	h.log.Info("redfish listening (HTTPS)", "addr", ln.Addr().String(),
		"cert_sha256", redfish.Fingerprint(cert.Certificate[0]), "self_signed", c.RedfishCert == "")
	h.Redfish, h.RedfishCert, h.rfLn, h.rfTLS = svc, leaf, ln, cert
	return nil
}

// redfishCert loads certFile/keyFile (the key must be a private file), or
// makes a self-signed certificate for addr's host.
func redfishCert(addr, name, certFile, keyFile string) (tls.Certificate, error) {
	if certFile == "" {
		host, _, _ := net.SplitHostPort(addr)
		cert, _, err := redfish.SelfSigned(host, name)
		return cert, err
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := fileio.ReadSecret(keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("key: %w", err)
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

// RedfishAddr is the Redfish service's TCP address, or "" without one.
func (h *Host) RedfishAddr() string {
	if h.rfLn == nil {
		return ""
	}
	return h.rfLn.Addr().String()
}

// redfishPowerWatch publishes power changes the guest's system interface
// reports (connected: on) as Redfish events.
func (h *Host) redfishPowerWatch(up bool) {
	if h.Redfish != nil {
		h.Redfish.NotifyPower(up)
	}
}

// thresholdNames are the Redfish names of the IPMI thresholds, in
// bmcsim/sensors' order (LNC, LCR, LNR, UNC, UCR, UNR).
var thresholdNames = [6]string{"LowerCaution", "LowerCritical", "LowerFatal", "UpperCaution", "UpperCritical", "UpperFatal"}

// Sensors reads the BMC's threshold sensors from its sensor model (the
// readings Get Sensor Reading answers).
func (rb *redfishBackend) Sensors() []redfish.Sensor {
	m := rb.b.Sensors()
	if m == nil {
		return nil
	}
	var out []redfish.Sensor
	for i := range sensors.Defs {
		d := &sensors.Defs[i]
		if d.Discrete {
			continue
		}
		r, ok := m.Read(d.Number)
		if !ok {
			continue
		}
		s := redfish.Sensor{ID: strings.ReplaceAll(d.Name, " ", ""), Name: d.Name, Reading: r.Value, Available: !r.Unavailable,
			Thresholds: map[string]float64{}}
		switch d.Type {
		case types.SensorTypeTemperature:
			s.ReadingType, s.Units, s.Context = "Temperature", "Cel", "SystemBoard"
			if d.Entity == 0x03 {
				s.Context = "CPU"
			} else if d.Entity == 0x37 {
				s.Context = "Intake"
			}
		case types.SensorTypeFan:
			s.ReadingType, s.Units, s.Context = "Rotational", "RPM", "Fan"
		case types.SensorTypePowerSupply:
			s.ReadingType, s.Units, s.Context = "Power", "W", "PowerSupply"
		case types.SensorTypeVoltage:
			s.ReadingType, s.Units, s.Context = "Voltage", "V", "VoltageRegulator"
		default:
			continue
		}
		for j, v := range d.Thresholds {
			if math.IsNaN(v) {
				continue
			}
			s.Thresholds[thresholdNames[j]] = v
			if r.Status&(1<<j) != 0 {
				s.Asserted = append(s.Asserted, thresholdNames[j])
			}
		}
		out = append(out, s)
	}
	return out
}

// PowerStats is the PSU input power, as DCMI Get Power Reading reports it.
func (rb *redfishBackend) PowerStats() redfish.PowerStats {
	m := rb.b.Sensors()
	if m == nil {
		return redfish.PowerStats{}
	}
	p := m.Power()
	return redfish.PowerStats{Now: p.Now, Min: p.Min, Max: p.Max, Avg: p.Avg, Period: p.Period}
}
