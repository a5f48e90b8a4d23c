package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"

	"github.com/bougou/go-ipmi/pkg/transport/udp"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/ooblab/ooblab/bmcsim/bmc"
	"github.com/ooblab/ooblab/bmcsim/config"
	"github.com/ooblab/ooblab/bmcsim/kcs"
	"github.com/ooblab/ooblab/bmcsim/metrics"
	"github.com/ooblab/ooblab/bmcsim/queue"
	"github.com/ooblab/ooblab/bmcsim/redfish"
	"github.com/ooblab/ooblab/bmcsim/sol"
	"github.com/ooblab/ooblab/internal/oem"
	"github.com/ooblab/ooblab/internal/record"
)

// Host is one BMC as the bmcsim program runs it: the LAN channel, the OOB-I
// queues on its registry, the Queue1Notify notifier and, when the config
// names a KCS address, the system interface for QEMU with chassis power tied
// to it. NewHost listens on every port before it returns (so a QEMU started
// next finds its BMC, and ":0" addresses are resolved); Serve serves them.
// Tests get the same Host through bmcsim/bmcsimtest.
type Host struct {
	BMC    *bmc.BMC
	Queues *queue.Queues
	KCS    *kcs.Server // nil without a system interface
	Serial *sol.Serial // nil without a serial port (SOL)
	// Redfish is the BMC's Redfish service (nil without one) and
	// RedfishCert its certificate.
	Redfish     *redfish.Service
	RedfishCert *x509.Certificate

	powerDriver bmc.PowerDriver // nil without a system interface
	rfLn        net.Listener
	rfTLS       tls.Certificate

	lan    *udp.Conn
	kcsLn  net.Listener
	serLn  net.Listener
	log    *slog.Logger
	notify *notifier
}

// Pushes counts the Queue1Notify messages pushed to the host.
func (h *Host) Pushes() int64 { return h.notify.pushes.Load() }

// HostOptions are what a Host shares with the rest of the process.
type HostOptions struct {
	Logger     *slog.Logger
	Metrics    *metrics.Metrics      // nil: metrics of its own
	Registerer prometheus.Registerer // queue metrics; nil: none
}

// NewHost builds the BMC of cfg and opens its listeners.
func NewHost(cfg config.Config, o HostOptions) (*Host, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b, err := bmc.New(cfg, log, o.Metrics)
	if err != nil {
		return nil, err
	}
	h := &Host{BMC: b, log: log.With("bmc", b.Config.Name)}
	var reg prometheus.Registerer
	if o.Registerer != nil {
		reg = prometheus.WrapRegistererWith(prometheus.Labels{"bmc": b.Config.Name}, o.Registerer)
	}
	n := &notifier{iana: oem.IANA(b.Config.IANA), log: h.log}
	h.notify = n
	h.Queues, err = queue.Open(queue.Options{
		Capacity1:        b.Config.Queue1Capacity,
		Capacity2:        b.Config.Queue2Capacity,
		ReaderTTL:        b.Config.ReaderTTL.Duration,
		FollowerTTL:      b.Config.FollowerTTL.Duration,
		StateDir:         b.Config.State,
		Registerer:       reg,
		Logger:           h.log,
		OnQueue1Wake:     n.queue1Wake,
		AfterQueue1Write: faultHook(b.Config, h.log),
		OnQueue2Write: func(r record.Record, owner string) {
			if h.Redfish != nil { // set before serving; Queue 2 is written while serving
				h.Redfish.NotifyQueue2(r, owner)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("bmc %s: queues: %w", b.Config.Name, err)
	}
	n.depth = h.Queues.Queue1().Len
	// Register before serving: go-ipmi's Registry is not safe to change
	// while requests are dispatched.
	h.Queues.Register(b.Registry, b.Config.IANA)
	if d1, d2 := h.Queues.Queue1().Len(), h.Queues.Queue2().Len(); d1 > 0 || d2 > 0 {
		h.log.Info("queues restored from journal", "queue1", d1, "queue2", d2, "state", b.Config.State)
	}
	if b.Config.KCS != "" {
		if err := h.listenKCS(n); err != nil {
			h.Close()
			return nil, err
		}
	}
	if b.Config.Serial != "" {
		if err := h.listenSerial(); err != nil {
			h.Close()
			return nil, err
		}
	}
	if h.lan, err = b.ListenLAN(); err != nil {
		h.Close()
		return nil, err
	}
	if b.Config.Redfish != "" {
		if err := h.listenRedfish(); err != nil { // redfish.go
			h.Close()
			return nil, err
		}
	}
	return h, nil
}

// LANAddr is the LAN channel's UDP address.
func (h *Host) LANAddr() *net.UDPAddr { return h.lan.LocalAddr().(*net.UDPAddr) }

// KCSAddr is the system interface's TCP address, or "" without one.
func (h *Host) KCSAddr() string {
	if h.kcsLn == nil {
		return ""
	}
	return h.kcsLn.Addr().String()
}

// SerialAddr is the serial port's TCP address (QEMU's serial chardev
// connects there), or "" without one.
func (h *Host) SerialAddr() string {
	if h.serLn == nil {
		return ""
	}
	return h.serLn.Addr().String()
}

// Serve serves the LAN channel and the system interface until ctx ends or
// one of them fails.
func (h *Host) Serve(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	if h.KCS != nil {
		g.Go(func() error {
			err := h.KCS.Serve(ctx, h.kcsLn)
			if err != nil && !errors.Is(err, context.Canceled) {
				return fmt.Errorf("bmc %s: kcs: %w", h.BMC.Config.Name, err)
			}
			return nil
		})
	}
	if h.Serial != nil {
		g.Go(func() error {
			err := h.Serial.Serve(ctx, h.serLn)
			if err != nil && !errors.Is(err, context.Canceled) {
				return fmt.Errorf("bmc %s: %w", h.BMC.Config.Name, err)
			}
			return nil
		})
	}
	if h.Redfish != nil {
		g.Go(func() error {
			if err := h.Redfish.Serve(ctx, h.rfLn, h.rfTLS); err != nil {
				return fmt.Errorf("bmc %s: %w", h.BMC.Config.Name, err)
			}
			return nil
		})
	}
	g.Go(func() error { return h.BMC.ServeLAN(ctx, h.lan) })
	return g.Wait()
}

// Close closes the queues (and their journals) and any listener Serve did
// not take over. Call it after Serve returned.
func (h *Host) Close() error {
	if h.lan != nil {
		_ = h.lan.Close()
	}
	if h.kcsLn != nil {
		_ = h.kcsLn.Close()
	}
	if h.serLn != nil {
		_ = h.serLn.Close()
	}
	if h.rfLn != nil {
		_ = h.rfLn.Close()
	}
	if h.Queues != nil {
		return h.Queues.Close()
	}
	return nil
}

// listenKCS opens the system interface for QEMU's ipmi-bmc-extern chardev
// and ties chassis power to the guest.
func (h *Host) listenKCS(n *notifier) error {
	b, log := h.BMC, h.log
	ln, err := net.Listen("tcp", b.Config.KCS)
	if err != nil {
		return fmt.Errorf("bmc %s: kcs listener: %w", b.Config.Name, err)
	}
	opts := []kcs.Option{}
	if b.Config.State != "" {
		// Keep the host's BMC Global Enables across bmcsim restarts.
		path := filepath.Join(b.Config.State, "kcs-enables")
		if v, err := os.ReadFile(path); err == nil && len(v) == 1 {
			opts = append(opts, kcs.WithEnables(v[0]))
		}
		opts = append(opts, kcs.WithOnEnables(func(e uint8) {
			if err := os.WriteFile(path, []byte{e}, 0o600); err != nil {
				log.Warn("cannot keep the host's BMC Global Enables", "err", err)
			}
		}))
	}
	q := h.Queues
	srv := kcs.New(b.IPMI, b.Registry, log, append(opts,
		kcs.WithAdminCommands(b.Config.SystemInterfaceAdmin),
		kcs.WithOnGuestReset(b.HostReset), // a reboot uses a once-only boot device
		kcs.WithOnRequest(func(netfn, cmd, cc uint8) {
			log.Debug("system interface request", "netfn", netfn, "cmd", cmd, "cc", cc)
		}),
		kcs.WithOnConnState(func(up bool) {
			log.Info("system interface", "qemu_connected", up)
			h.redfishPowerWatch(up)
			if d := q.Queue1().Len(); up && d > 0 {
				n.push(n.server(), d) // records waited while the host was away
			}
		}))...)
	n.set(srv)
	h.powerDriver = newHostPower(srv, b.Config.QMP, log)
	b.SetPowerDriver(h.powerDriver)
	log.Info("system interface listening", "addr", ln.Addr().String())
	h.KCS, h.kcsLn = srv, ln
	return nil
}

// listenSerial opens the serial port QEMU's ttyS0 chardev connects to and
// gives it to the BMC as its SOL console (bmcsim/sol).
func (h *Host) listenSerial() error {
	b := h.BMC
	ln, err := net.Listen("tcp", b.Config.Serial)
	if err != nil {
		return fmt.Errorf("bmc %s: serial listener: %w", b.Config.Name, err)
	}
	h.Serial = sol.NewSerial(sol.Options{
		Logger:      h.log,
		IdleTimeout: b.Config.SOLIdleTimeout.Duration,
		OnIdle:      b.DeactivateSOL,
	})
	b.SetConsole(h.Serial)
	h.log.Info("serial port listening (SOL)", "addr", ln.Addr().String(),
		"sol_privilege", b.Config.SOLPrivilege, "sol_idle_timeout", b.Config.SOLIdleTimeout.String())
	h.serLn = ln
	return nil
}

// FaultKillInQueue1Write is the file (in a BMC's state folder) that arms
// the fault hook: the next Write Queue 1 kills bmcsim after the record is
// journalled and before it is answered.
const FaultKillInQueue1Write = "fault-kill-in-queue1-write"

// faultHook is the AfterQueue1Write of a BMC with fault_hooks, else nil.
func faultHook(c config.Config, log *slog.Logger) func() {
	if !c.FaultHooks {
		return nil
	}
	armed := filepath.Join(c.State, FaultKillInQueue1Write)
	return func() {
		if err := os.Remove(armed); err != nil {
			return // not armed
		}
		log.Warn("fault hook: SIGKILL inside a Write Queue 1 (journalled, not answered)")
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way; answer nothing
	}
}
