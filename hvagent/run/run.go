// Package run wires hvagent together from its command-line options: the
// host key, the authorization list, libvirt, the request journal, the alert
// outlets, the OOB-I loop over the system interface and the VMM-I TLS
// server, all around one agent.Agent.
package run

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ooblab/ooblab/hvagent/agent"
	"github.com/ooblab/ooblab/hvagent/alert"
	"github.com/ooblab/ooblab/hvagent/journal"
	"github.com/ooblab/ooblab/hvagent/oob"
	"github.com/ooblab/ooblab/hvagent/policy"
	"github.com/ooblab/ooblab/hvagent/sysif"
	"github.com/ooblab/ooblab/hvagent/sysif/chardev"
	"github.com/ooblab/ooblab/hvagent/sysif/devipmi"
	"github.com/ooblab/ooblab/hvagent/virt"
	"github.com/ooblab/ooblab/hvagent/vmmi"
	"github.com/ooblab/ooblab/hvagent/watch"
	"github.com/ooblab/ooblab/internal/oem"
	"github.com/ooblab/ooblab/internal/seal"
	"github.com/ooblab/ooblab/internal/vmsg"
)

// Options are hvagent's flags.
type Options struct {
	HostID       string        // must match the key's account name when set
	KeyFile      string        // otpauth:// URI, mode 0600
	PolicyFile   string        // TOML authorization list
	LibvirtURI   string        // default qemu:///system
	Sysif        string        // "chardev:HOST:PORT", "dev:/dev/ipmi0" or "" (no OOB-I)
	VMMIAddr     string        // TLS listen address, "" for none
	TLSCert      string        // PEM chain
	TLSKey       string        // PEM key, mode 0600
	TLSClientCA  string        // PEM CA(s) issuing the VMS principals' client certificates
	JournalFile  string        // request-id journal
	AlertHook    string        // shell command run per alert, "" for none
	PollInterval time.Duration // Queue 1 poll without attention (default 1 s)
	IANA         uint32        // OEM enterprise number (default 32473)
	// StartVMs are domains the agent starts itself once it watches libvirt
	// (in the background, not waiting): a boot-time start made by the agent
	// is its own, where one by a script beside it would be reported as a
	// change behind its back.
	StartVMs []string
	// ShutdownTimeout bounds how long a stop (SIGTERM) waits for actions
	// still running to finish and journal their outcome (default 90 s).
	ShutdownTimeout time.Duration
	Logger          *slog.Logger
	// Ready, when set, is called once both channels were set up, with their
	// status (for tests and the lab).
	Ready func(Status)
}

// Status is what the "hvagent ready" line reports.
type Status struct {
	HostID string
	OOB    string // "off", "up (…)" or "waiting: …"
	VMMI   string // "off" or "listening on ADDR"
	Addr   net.Addr
}

// ReadKey reads a host key file, refusing one that others may read. The
// file may hold two keys during a host key rotation (seal.ParseKeyRing):
// the first seals answers, both open requests.
func ReadKey(path string) (*seal.Key, error) {
	ring, err := ReadKeyRing(path)
	if err != nil {
		return nil, err
	}
	return ring[0], nil
}

// ReadKeyRing is ReadKey with every key of the file.
func ReadKeyRing(path string) ([]*seal.Key, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("--key: %w", err)
	}
	if p := fi.Mode().Perm(); p&0o077 != 0 {
		return nil, fmt.Errorf("--key %s has mode %#o: it holds the host secret, make it 0600 (chmod 600 %s)", path, p, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--key: %w", err)
	}
	ring, err := seal.ParseKeyRing(string(b))
	if err != nil {
		return nil, fmt.Errorf("--key %s: %w", path, err)
	}
	return ring, nil
}

// Run serves until ctx ends.
func Run(ctx context.Context, o Options) error {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	if o.LibvirtURI == "" {
		o.LibvirtURI = "qemu:///system"
	}
	if o.IANA == 0 {
		o.IANA = uint32(oem.DefaultIANA)
	}
	if o.IANA > uint32(oem.MaxIANA) {
		return fmt.Errorf("--iana %d does not fit 3 bytes", o.IANA)
	}
	if o.Sysif == "" && o.VMMIAddr == "" {
		return errors.New("no channel: give --sysif (OOB-I) and/or --vmmi (VMM-I)")
	}
	if o.JournalFile == "" {
		return errors.New("--journal FILE is required: without it a retried request could run twice")
	}
	ring, err := ReadKeyRing(o.KeyFile)
	if err != nil {
		return err
	}
	key := ring[0]
	if o.HostID != "" && o.HostID != key.HostID() {
		return fmt.Errorf("--host-id %q but the key in %s is for %q", o.HostID, o.KeyFile, key.HostID())
	}
	pol, err := policy.Load(o.PolicyFile)
	if err != nil {
		return fmt.Errorf("--policy: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(o.JournalFile), 0o700); err != nil {
		return fmt.Errorf("--journal: %w", err)
	}
	j, err := journal.Open(o.JournalFile)
	if err != nil {
		return fmt.Errorf("--journal: %w", err)
	}
	defer j.Close()
	if n := j.Recovered(); n > 0 {
		log.Warn("journal had a torn tail (crash while writing); cut it", "bytes", n, "file", o.JournalFile)
	}
	hv, err := virt.Open(ctx, o.LibvirtURI)
	if err != nil {
		return fmt.Errorf("--libvirt %s: %w", o.LibvirtURI, err)
	}
	defer hv.Close()
	host := vmsg.HostInfo{HostID: key.HostID(), Hypervisor: o.LibvirtURI}
	host.Hostname, _ = os.Hostname()
	if v, err := hv.Conn().GetLibVersion(); err == nil {
		host.Libvirt = fmt.Sprintf("%d.%d.%d", v/1000000, v/1000%1000, v%1000)
	}

	iana := oem.IANA(o.IANA)
	conn := &lazyConn{ready: make(chan struct{})}
	sinks := alert.Multi{alert.Log{Logger: log}}
	if o.AlertHook != "" {
		sinks = append(sinks, &alert.Hook{Command: []string{"/bin/sh", "-c", o.AlertHook}, Logger: log})
	}
	var loop *oob.Loop
	var q2 alert.Sink
	var a *agent.Agent
	if o.Sysif != "" {
		sinks = append(sinks, &oob.SELSink{Conn: conn, IANA: iana})
		loop = oob.New(oob.Config{Conn: conn, IANA: iana, PollInterval: o.PollInterval, Logger: log.With("channel", agent.ViaOOB),
			Handler: lateAgent{&a}})
		q2 = &oob.Queue2Sink{Loop: loop, Seal: func(al alert.Alert) ([]byte, error) { return a.SealAlert(al) }}
	}
	a, err = agent.New(agent.Config{Key: key, Opener: seal.OpenerOptions{Also: ring[1:]},
		Policy: pol, Hypervisor: hv, Journal: j, Alerts: sinks, Queue2: q2, Host: host, Logger: log,
		ChallengeState: o.JournalFile + ".challenges"})
	if err != nil {
		return err
	}

	var srv *vmmi.Server
	var ln net.Listener
	if o.VMMIAddr != "" {
		tc, err := vmmi.LoadTLS(o.TLSCert, o.TLSKey)
		if err != nil {
			return fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		if o.TLSClientCA == "" {
			return errors.New("--vmmi needs --tls-client-ca: the VMS authenticates with a client certificate")
		}
		cas, err := vmmi.LoadClientCAs(o.TLSClientCA)
		if err != nil {
			return fmt.Errorf("--tls-client-ca: %w", err)
		}
		srv, err = vmmi.New(vmmi.Config{Handler: a, TLS: tc, ClientCAs: cas, KnownPrincipal: a.KnownPrincipal,
			Logger: log.With("channel", agent.ViaVMMI)})
		if err != nil {
			return err
		}
		ln, err = net.Listen("tcp", o.VMMIAddr)
		if err != nil {
			return fmt.Errorf("--vmmi: %w", err)
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 2)

	// Changes made behind the agent's back (virsh on the host, the guest,
	// a crash) go to every outlet, queue 2 included.
	var curPol atomic.Pointer[policy.Policy]
	curPol.Store(pol)
	outlets := alert.Multi{sinks}
	if q2 != nil {
		outlets = append(outlets, q2)
	}
	watching := make(chan struct{})
	wg.Go(func() {
		err := watch.Run(ctx, watch.Config{Source: hv, Sink: outlets, Host: key.HostID(),
			Users: func() []string { return curPol.Load().AlertUsers() }, Logger: log, Ready: func() { close(watching) }})
		if err != nil {
			log.Warn("cannot watch libvirt events: VM changes made behind the agent's back go unreported", "err", err)
			close(watching)
		}
	})
	select {
	case <-watching:
	case <-ctx.Done():
	}
	for _, vm := range o.StartVMs {
		wg.Go(func() { startAtBoot(ctx, hv, vm, log) })
	}
	st := Status{HostID: key.HostID(), OOB: "off", VMMI: "off"}
	if srv != nil {
		st.VMMI, st.Addr = "listening on "+ln.Addr().String(), ln.Addr()
		wg.Go(func() {
			if err := srv.Serve(ctx, ln); err != nil {
				errs <- err
				cancel()
			}
		})
	}
	if loop != nil {
		// Open the system interface (retrying until the BMC answers), then
		// run the loop.
		first := make(chan string, 1)
		wg.Go(func() {
			c, err := openSysif(ctx, o.Sysif, log, conn, first)
			if err != nil {
				return
			}
			defer c.Close()
			loop.Run(ctx)
		})
		select {
		case st.OOB = <-first:
		case <-ctx.Done():
		}
		if strings.HasPrefix(st.OOB, "up") {
			pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
			q1s, q2s, err := loop.Probe(pctx)
			pcancel()
			if err != nil {
				st.OOB += fmt.Sprintf(", queue status: %v (will retry)", err)
			} else {
				st.OOB += fmt.Sprintf(", queue 1 %d/%d, queue 2 %d/%d", q1s.Depth, q1s.Capacity, q2s.Depth, q2s.Capacity)
			}
		}
	}
	log.Info("hvagent ready", "host", st.HostID, "oob_i", st.OOB, "vmm_i", st.VMMI, "libvirt", o.LibvirtURI, "journal", o.JournalFile, "alerts_to", pol.AlertUsers())
	if o.Ready != nil {
		o.Ready(st)
	}

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-hup:
			if p, err := policy.Load(o.PolicyFile); err != nil {
				log.Error("policy reload failed; keeping the old list", "file", o.PolicyFile, "err", err)
			} else {
				a.SetPolicy(p)
				curPol.Store(p)
				log.Info("policy reloaded", "file", o.PolicyFile)
			}
		}
	}
	cancel()
	wg.Wait()
	// The channels take no more requests; actions already begun run to
	// their end and journal their outcome, so a retry gets the truth.
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 90 * time.Second
	}
	sctx, scancel := context.WithTimeout(context.Background(), o.ShutdownTimeout)
	if err := a.Wait(sctx); err != nil {
		log.Error("stopping with actions still running; their requests will be answered interrupted after the restart", "waited", o.ShutdownTimeout)
	}
	scancel()
	log.Info("hvagent stopped")
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// lateAgent is the agent for the OOB-I loop, which is built before it.
type lateAgent struct{ a **agent.Agent }

func (l lateAgent) HandleEnvelope(ctx context.Context, env []byte, via string) ([][]byte, error) {
	return (*l.a).HandleEnvelope(ctx, env, via)
}

func (l lateAgent) Prepare(ctx context.Context, env []byte, via string) func(context.Context) ([][]byte, error) {
	return (*l.a).Prepare(ctx, env, via).Run
}

// openSysif opens the --sysif spec, retrying with backoff, hands it to
// conn, and reports the first outcome on first.
func openSysif(ctx context.Context, spec string, log *slog.Logger, conn *lazyConn, first chan<- string) (sysif.Conn, error) {
	kind, arg, _ := strings.Cut(spec, ":")
	open := func() (sysif.Conn, error) {
		switch kind {
		case "chardev":
			dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			return chardev.Dial(dctx, arg, chardev.WithLogger(log))
		case "dev":
			d, err := devipmi.Open(arg, devipmi.WithLogger(log))
			if err != nil {
				return nil, err
			}
			// bmcsim pushes Queue1Notify when Queue 1 gains records; the
			// kernel hands it only to a process registered for it, and
			// bare attention never reaches user space.
			if err := d.RegisterForCmd(uint8(oem.NetFnOEMGroupRequest), uint8(oem.CmdQueue1Notify)); err != nil {
				log.Warn("cannot register for Queue1Notify; Queue 1 is found by polling only", "err", err)
			}
			return d, nil
		}
		return nil, fmt.Errorf("--sysif %q: want chardev:HOST:PORT or dev:/dev/ipmi0", spec)
	}
	delay := time.Second
	reported := false
	for {
		c, err := open()
		if err == nil {
			conn.set(c)
			if !reported {
				first <- "up (" + spec + ")"
			} else {
				log.Info("system interface open; OOB-I up", "sysif", spec)
			}
			return c, nil
		}
		if !reported {
			first <- fmt.Sprintf("waiting: %v", err)
			reported = true
		}
		log.Warn("cannot open the system interface; OOB-I down, retrying", "sysif", spec, "err", err, "retry_in", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, 30*time.Second)
	}
}

// lazyConn is a sysif.Conn that is not connected until set; the alert
// sinks hold it from the start.
type lazyConn struct {
	mu    sync.Mutex
	c     sysif.Conn
	ready chan struct{}
}

var errNotOpen = errors.New("system interface not open yet")

func (l *lazyConn) set(c sysif.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.c = c
	close(l.ready)
}

func (l *lazyConn) get() sysif.Conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.c
}

func (l *lazyConn) Do(ctx context.Context, netfn, cmd uint8, data []byte) ([]byte, uint8, error) {
	c := l.get()
	if c == nil {
		return nil, 0, errNotOpen
	}
	return c.Do(ctx, netfn, cmd, data)
}

func (l *lazyConn) Notify() <-chan struct{} {
	if c := l.get(); c != nil {
		return c.Notify()
	}
	return nil
}

func (l *lazyConn) Close() error { return nil }

// startAtBoot starts vm as the agent's own action (so the lifecycle watcher
// knows it), logging the outcome; the lab's console shows it.
func startAtBoot(ctx context.Context, hv *virt.Libvirt, vm string, log *slog.Logger) {
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if st, err := virt.Do(sctx, hv, virt.ActionStart, vm); err != nil {
		log.Warn("boot-time start failed", "vm", vm, "err", err)
	} else {
		log.Info("boot-time start done", "vm", vm, "state", st)
	}
}
