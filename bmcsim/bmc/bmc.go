// Package bmc builds one simulated BMC on go-ipmi v0.9.1's server: the IPMI
// v2.0 LAN channel (RMCP+, suites 17 and 3 only), users, chassis power, SEL,
// SDR and the few App commands go-ipmi lacks. Its configuration is
// bmcsim/config, the LAN hardening go-ipmi lacks (login accounting, lockout,
// response cache) is bmcsim/lan, and its Prometheus series are
// bmcsim/metrics. The OOB-I queues and the QEMU system interface plug into
// its Registry.
package bmc

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	ipmibmc "github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/clock"
	"github.com/bougou/go-ipmi/pkg/hal"
	"github.com/bougou/go-ipmi/pkg/hal/mock"
	"github.com/bougou/go-ipmi/pkg/handlers"
	"github.com/bougou/go-ipmi/pkg/server"
	"github.com/bougou/go-ipmi/pkg/transport/udp"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ooblab/ooblab/bmcsim/config"
	"github.com/ooblab/ooblab/bmcsim/lan"
	"github.com/ooblab/ooblab/bmcsim/metrics"
)

// BMC is one simulated baseboard management controller.
type BMC struct {
	Config   config.Config
	IPMI     *ipmibmc.BMC
	Registry *handlers.Registry
	SEL      *SEL

	log     *slog.Logger
	metrics *metrics.Metrics
	chassis *chassis
	guard   *lan.Guard
	books   lan.Books    // login accounting, session slots, reply cache
	console *consoleSlot // nil without a serial port
	sdr     *sdrRepo     // sdr.go
	boot    *bootOpts    // bootopts.go
	std     *stdState    // stdcmds.go

	stdChannelInfo handlers.Handler
}

// simHAL is the hardware behind the BMC: in-memory FRU/SDR storage from
// go-ipmi, our chassis, and a NIC description of the LAN port.
type simHAL struct {
	*mock.HAL
	ch  *chassis
	net *mock.Network
}

func (h *simHAL) Chassis() hal.ChassisHAL { return h.ch }
func (h *simHAL) Network() hal.NetworkHAL { return h.net }
func (h *simHAL) Sensors() hal.SensorHAL  { return nil }
func (h *simHAL) GPIO() hal.GPIOHAL       { return nil }
func (h *simHAL) I2C() hal.I2CHAL         { return nil }

// New builds a BMC from a normalized Config.
func New(cfg config.Config, log *slog.Logger, m *metrics.Metrics) (*BMC, error) {
	if err := cfg.Normalize(); err != nil {
		return nil, err
	}
	if m == nil {
		m = metrics.New(nil)
	}
	log = log.With("bmc", cfg.Name)
	sum := sha256.Sum256([]byte("ooblab/bmcsim/" + cfg.Name))
	var guid [16]byte
	copy(guid[:], sum[:16])
	guid[6] = guid[6]&0x0F | 0x40 // RFC 4122 version 4 layout
	guid[8] = guid[8]&0x3F | 0x80

	ch := &chassis{on: true}
	h := &simHAL{HAL: mock.New(), ch: ch, net: &mock.Network{}}
	var console *consoleSlot // sol.go: filled by SetConsole
	if cfg.Serial != "" {
		console = &consoleSlot{}
		h.SetConsole(console)
	}
	host, port, _ := net.SplitHostPort(cfg.LAN)
	var ipcfg hal.IPConfig
	if ip := net.ParseIP(host).To4(); ip != nil {
		copy(ipcfg.IP[:], ip)
		copy(ipcfg.Mask[:], net.IPv4Mask(255, 0, 0, 0))
	}
	// A locally administered MAC derived from the BMC's name.
	ipcfg.MAC = [6]byte{0x02, 0x00, sum[16], sum[17], sum[18], sum[19]}
	var p int
	fmt.Sscanf(port, "%d", &p)
	ipcfg.Port = uint16(p)
	_ = h.net.SetConfig(context.Background(), &ipcfg)
	if sdr := h.Storage().SDR(); sdr != nil {
		_ = sdr.Write(context.Background(), 1, types.PackMCLocator(types.MCLocatorPackOpts{
			RecordID: 1, DeviceSupport: 0x8E, Name: trim16("bmcsim " + cfg.Name),
		}))
	}
	if fru := h.Storage().FRU(); fru != nil {
		// Chassis, board and product areas, as inventory tools read them.
		if data, err := types.PackFRU(types.FRUPackConfig{
			Chassis: &types.FRUPackChassis{Type: 0x17, PartNumber: "OOB-C1", Serial: cfg.Name}, // rack mount chassis
			Board: &types.FRUPackBoard{MfgDate: time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC), Mfg: "ooblab",
				Product: "bmcsim board", Serial: cfg.Name, PartNumber: "OOB-B1"},
			Product: &types.FRUPackProduct{Manufacturer: "ooblab", Name: "bmcsim", Version: "1", Serial: cfg.Name},
		}); err == nil {
			_ = fru.Write(context.Background(), 0, data)
		}
	}

	suites := make([]types.CipherSuiteID, 0, len(cfg.CipherSuites))
	for _, s := range cfg.CipherSuites {
		suites = append(suites, types.CipherSuiteID(s))
	}
	info := ipmibmc.DeviceInfo{
		DeviceID:       0x20,
		DeviceRevision: 0x01,
		FirmwareMajor:  0x01,
		FirmwareMinor:  0x00,
		// IPMI version is BCD with the minor digit high: 0x02 is "2.0".
		// (go-ipmi's example server sends 0x20, which clients print as 0.2.)
		IPMIVersion:    0x02,
		ManufacturerID: cfg.ManufacturerID,
		ProductID:      0x0001,
		// Chassis, SEL, SDR repository, FRU inventory.
		AdditionalDeviceSupport: 0x8E,
	}
	b := ipmibmc.New(info, guid, h, ipmibmc.WithClock(clock.Real), ipmibmc.WithCipherSuites(suites), ipmibmc.WithV15Disabled())
	b.Sessions = ipmibmc.NewSessionStoreWithOptions(b.Clock(),
		ipmibmc.WithMaxSessions(cfg.SessionLimit), ipmibmc.WithInactivityTimeout(cfg.SessionTimeout.Duration))
	books := lan.Books{Logins: lan.NewLogins(&cfg), Slots: lan.NewSlots(&cfg), Replies: lan.NewReplyCache(cfg.Name, m)}
	b.Sessions.SetOnRemove(func(id uint32) {
		b.SOL.DeactivateBySession(id)
		books.Slots.Removed(id)
	})
	if err := configureSOL(b, &cfg); err != nil {
		return nil, err
	}
	// The null user (slot 1) never logs in.
	_ = b.Users.Update(1, func(u *ipmibmc.User) error { u.Enabled = false; return nil })
	for i, u := range cfg.Users {
		priv, _ := config.ParsePrivilege(u.Privilege)
		id := uint8(i + 2)
		if _, err := b.Users.Add(id, u.Name); err != nil {
			return nil, fmt.Errorf("bmc %s: add user %s: %w", cfg.Name, u.Name, err)
		}
		pw := u.Password
		err := b.Users.Update(id, func(x *ipmibmc.User) error {
			x.SetPassword([]byte(pw))
			x.Enabled = true
			x.ChannelAccess[1] = ipmibmc.UserChannelAccess{MaxPrivilege: priv, Enabled: true}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("bmc %s: set user %s: %w", cfg.Name, u.Name, err)
		}
	}

	s := &BMC{Config: cfg, IPMI: b, SEL: NewSEL(512), log: log, metrics: m, chassis: ch,
		books: books, console: console}
	r := handlers.NewRegistry()
	// Outermost: a retransmit answered from the cache runs no handler and
	// counts as a retransmit, not as a request.
	r.Use(books.Replies.Middleware)
	r.Use(m.Middleware(cfg.Name))
	r.Use(clampPrivilege) // privilege.go: a session runs at what its login earned
	std := stdAppRegistry()
	s.stdChannelInfo = handlers.HandlerFunc(func(ctx context.Context, hctx *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
		return std.Dispatch(ctx, hctx, uint8(types.NetFnAppRequest), 0x42, req)
	})
	handlers.RegisterAllHandlers(r)
	s.registerExtras(r)
	s.Registry = r
	m.Sessions.WithLabelValues(cfg.Name).Set(0)
	return s, nil
}

// stdAppRegistry holds go-ipmi's own App handlers, which keep no state of
// their own (the BMC comes with each call's HandlerContext): one registry
// serves every BMC of the process instead of ~5 KiB of maps per BMC.
var stdAppRegistry = sync.OnceValue(func() *handlers.Registry {
	r := handlers.NewRegistry()
	handlers.RegisterAppHandlers(r)
	return r
})

func trim16(s string) string {
	if len(s) > 16 {
		return s[:16]
	}
	return s
}

// SetPowerDriver ties chassis power commands to the managed system.
func (s *BMC) SetPowerDriver(d PowerDriver) { s.chassis.setDriver(d) }

// SetPowerState records the managed system's power state.
func (s *BMC) SetPowerState(on bool) { s.chassis.SetPowerState(on) }

// PowerOn reports the chassis power state.
func (s *BMC) PowerOn() bool { on, _ := s.chassis.PowerState(context.Background()); return on }

// LoginWait reports how long a LAN login from ip naming user would have to
// wait now (0: it would pass; never more than login_backoff_max).
func (s *BMC) LoginWait(user, ip string) time.Duration { return s.books.Logins.Wait(user, ip) }

// Slowed reports whether a user is in its slowdown on the LAN channel
// (its failures reached the Bad Password Threshold).
func (s *BMC) Slowed(user string) bool { return s.books.Logins.Slowed(user) }

// ListenLAN opens the LAN channel's UDP socket. Its reads have no
// deadline: go-ipmi's default re-arms a 30 s one before every packet (a
// runtime timer update per request, for nothing: ServeLAN ends the server
// by closing the socket).
func (s *BMC) ListenLAN() (*udp.Conn, error) {
	conn, err := udp.Listen(s.Config.LAN, udp.WithReadTimeout(0))
	if err != nil {
		return nil, fmt.Errorf("bmc %s: listen on %s: %w", s.Config.Name, s.Config.LAN, err)
	}
	s.guard = lan.NewGuard(conn, s.IPMI, &s.Config, s.metrics, s.books, s.log)
	return conn, nil
}

// ServeLAN serves RMCP+ on conn (from ListenLAN) until ctx ends.
func (s *BMC) ServeLAN(ctx context.Context, conn *udp.Conn) error {
	if s.guard == nil || s.guard.PacketConn != conn {
		s.guard = lan.NewGuard(conn, s.IPMI, &s.Config, s.metrics, s.books, s.log)
	}
	srv := server.NewServer(s.IPMI, s.guard, server.WithHandlerRegistry(s.Registry), server.WithV15Disabled())
	stop := context.AfterFunc(ctx, func() { _ = srv.Close() })
	defer stop()
	chores.add(s) // upkeep.go: one goroutine for every BMC of the process
	defer chores.remove(s)
	s.log.Info("LAN channel up", "addr", conn.LocalAddr().String(), "cipher_suites", s.Config.CipherSuites,
		"users", len(s.Config.Users), "session_limit", s.Config.SessionLimit)
	err := srv.Serve(ctx)
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("bmc %s: serve LAN: %w", s.Config.Name, err)
	}
	return nil
}
