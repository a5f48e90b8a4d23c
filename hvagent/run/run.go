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
	"github.com/ooblab/ooblab/hvagent/virt/lvirt"
	"github.com/ooblab/ooblab/hvagent/vmmi"
	"github.com/ooblab/ooblab/hvagent/watch"
	"github.com/ooblab/ooblab/internal/fileio"
	"github.com/ooblab/ooblab/internal/oem"
	"github.com/ooblab/ooblab/internal/seal"
	"github.com/ooblab/ooblab/internal/vmsg"
)

// Options are hvagent's flags.
type Options struct {
	HostID      string // must match the key's account name when set
	KeyFile     string // otpauth:// URI, mode 0600
	PolicyFile  string // TOML authorization list
	LibvirtURI  string // default qemu:///system
	Sysif       string // "chardev:HOST:PORT", "dev:/dev/ipmi0" or "" (no OOB-I)
	VMMIAddr    string // TLS listen address, "" for none
	TLSCert     string // PEM chain
	TLSKey      string // PEM key, mode 0600
	TLSClientCA string // PEM CA(s) issuing the VMS principals' client certificates
	JournalFile string // request-id journal
	// JournalRetention is how long the journal remembers a request id
	// (default 24 h, at least MinJournalRetention): the VMS's issue-time
	// window (±5 min) plus the longest time it retries one id.
	JournalRetention time.Duration
	AlertHook        string        // shell command run per alert, "" for none
	PollInterval     time.Duration // Queue 1 poll without attention (default 1 s)
	IANA             uint32        // OEM enterprise number (default 32473)
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
	b, err := fileio.ReadSecret(path) // it holds the host secret: 0600, checked on the opened file
	if err != nil {
		return nil, fmt.Errorf("--key: %w", err)
	}
	ring, err := seal.ParseKeyRing(string(b))
	if err != nil {
		return nil, fmt.Errorf("--key %s: %w", path, err)
	}
	return ring, nil
}

// Run serves until ctx ends. Each stage is one function below, in order:
// check the options, load the identity (host key, policy), open the
// journal and libvirt, build the alert outlets, the agent, the OOB-I loop
// and the VMM-I server around it, serve, reload the policy on SIGHUP, and
// on the way out let running actions finish.
func Run(ctx context.Context, o Options) error {
	if err := checkOptions(&o); err != nil {
		return err
	}
	log := o.Logger
	id, err := loadIdentity(o)
	if err != nil {
		return err
	}
	j, err := openJournal(o, log)
	if err != nil {
		return err
	}
	defer j.Close()
	hv, host, err := openHypervisor(ctx, o, id.key.HostID())
	if err != nil {
		return err
	}
	defer hv.Close()
	out := newOutlets(o, log)
	a, err := agent.New(agent.Config{Key: id.key, Opener: seal.OpenerOptions{Also: id.ring[1:]},
		Policy: id.policy, Hypervisor: hv, Journal: j, Alerts: out.local, Queue2: out.queue2Sink(), Host: host,
		Logger: log, ChallengeState: o.JournalFile + ".challenges"})
	if err != nil {
		return err
	}
	loop := newOOBLoop(o, out, a, log)
	srv, ln, err := listenVMMI(o, a, log)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	var curPol atomic.Pointer[policy.Policy]
	curPol.Store(id.policy)
	adoptInterrupted(j, hv, log)
	watchLibvirt(ctx, &wg, hv, out, id.key.HostID(), &curPol, log)
	for _, vm := range o.StartVMs {
		wg.Go(func() { startAtBoot(ctx, a, vm, log) })
	}
	st := Status{HostID: id.key.HostID(), OOB: "off", VMMI: "off"}
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
		st.OOB = serveOOB(ctx, &wg, o.Sysif, out.conn, loop, log)
	}
	log.Info("hvagent ready", "host", st.HostID, "oob_i", st.OOB, "vmm_i", st.VMMI, "libvirt", o.LibvirtURI, "journal", o.JournalFile, "alerts_to", id.policy.AlertUsers())
	if o.Ready != nil {
		o.Ready(st)
	}

	reloadOnHangup(ctx, o.PolicyFile, a, &curPol, log)
	cancel()
	wg.Wait()
	finishActions(a, o.ShutdownTimeout, log)
	log.Info("hvagent stopped")
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// MinJournalRetention is the shortest journal retention hvagent accepts:
// twice the agent's issue-time window (a request is accepted up to 5 min
// either side of the host's clock).
const MinJournalRetention = 10 * time.Minute

// checkOptions fills in the defaults and refuses options hvagent cannot
// run with.
func checkOptions(o *Options) error {
	if o.Logger == nil {
		o.Logger = slog.Default()
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
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 90 * time.Second
	}
	if o.JournalRetention == 0 {
		o.JournalRetention = 24 * time.Hour
	}
	if o.JournalRetention < MinJournalRetention {
		return fmt.Errorf("--journal-retention %s is shorter than %s: a VMS retrying a request id inside its issue-time window could run it twice", o.JournalRetention, MinJournalRetention)
	}
	return nil
}

// identity is who the agent is and whom it obeys.
type identity struct {
	ring   []*seal.Key // ring[0] seals answers; every key opens requests
	key    *seal.Key
	policy *policy.Policy
}

// loadIdentity reads the host key file and the authorization list.
func loadIdentity(o Options) (identity, error) {
	ring, err := ReadKeyRing(o.KeyFile)
	if err != nil {
		return identity{}, err
	}
	key := ring[0]
	if o.HostID != "" && o.HostID != key.HostID() {
		return identity{}, fmt.Errorf("--host-id %q but the key in %s is for %q", o.HostID, o.KeyFile, key.HostID())
	}
	pol, err := policy.LoadFor(o.PolicyFile, key.HostID()) // this host's group's secrets only
	if err != nil {
		return identity{}, fmt.Errorf("--policy: %w", err)
	}
	return identity{ring: ring, key: key, policy: pol}, nil
}

// openJournal opens (creating) the request journal, cutting a torn tail.
func openJournal(o Options, log *slog.Logger) (*journal.Journal, error) {
	if err := os.MkdirAll(filepath.Dir(o.JournalFile), 0o700); err != nil {
		return nil, fmt.Errorf("--journal: %w", err)
	}
	j, err := journal.OpenWith(o.JournalFile, journal.Options{TTL: o.JournalRetention, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("--journal: %w", err)
	}
	if n := j.Recovered(); n > 0 {
		log.Warn("journal had a torn tail (crash while writing); cut it", "bytes", n, "file", o.JournalFile)
	}
	return j, nil
}

// openHypervisor connects to libvirt and describes the host for pongs.
func openHypervisor(ctx context.Context, o Options, hostID string) (*lvirt.Libvirt, vmsg.HostInfo, error) {
	hv, err := lvirt.Open(ctx, o.LibvirtURI)
	if err != nil {
		return nil, vmsg.HostInfo{}, fmt.Errorf("--libvirt %s: %w", o.LibvirtURI, err)
	}
	host := vmsg.HostInfo{HostID: hostID, Hypervisor: o.LibvirtURI}
	host.Hostname, _ = os.Hostname()
	if v, err := hv.Conn().GetLibVersion(); err == nil {
		host.Libvirt = fmt.Sprintf("%d.%d.%d", v/1000000, v/1000%1000, v%1000)
	}
	return hv, host, nil
}

// outlets are where alerts go: the local ones (log, hook, the BMC's SEL
// through the system interface) and, with an OOB-I, Queue 2. Both OOB-I
// outlets exist before what they write through: the system interface
// opens in the background (conn), and Queue 2 is written by the OOB loop,
// which is built after the agent it serves (queue2).
type outlets struct {
	local  alert.Multi
	conn   *lazyConn   // nil without --sysif
	queue2 *boundLater // nil without --sysif
}

func newOutlets(o Options, log *slog.Logger) *outlets {
	out := &outlets{local: alert.Multi{alert.Log{Logger: log}}}
	if o.AlertHook != "" {
		out.local = append(out.local, &alert.Hook{Command: []string{"/bin/sh", "-c", o.AlertHook}, Logger: log})
	}
	if o.Sysif != "" {
		out.conn = &lazyConn{ready: make(chan struct{})}
		out.local = append(out.local, &oob.SELSink{Conn: out.conn, IANA: oem.IANA(o.IANA)})
		out.queue2 = &boundLater{}
	}
	return out
}

// queue2Sink is the agent's Queue 2 outlet (nil without an OOB-I).
func (out *outlets) queue2Sink() alert.Sink {
	if out.queue2 == nil {
		return nil
	}
	return out.queue2
}

// all is every outlet, Queue 2 included: changes made behind the agent's
// back go to all of them.
func (out *outlets) all() alert.Multi {
	all := alert.Multi{out.local}
	if out.queue2 != nil {
		all = append(all, out.queue2)
	}
	return all
}

// newOOBLoop builds the OOB-I loop serving a over the system interface
// (nil without --sysif) and binds the Queue 2 outlet to it.
func newOOBLoop(o Options, out *outlets, a *agent.Agent, log *slog.Logger) *oob.Loop {
	if o.Sysif == "" {
		return nil
	}
	loop := oob.New(oob.Config{Conn: out.conn, IANA: oem.IANA(o.IANA), PollInterval: o.PollInterval,
		Logger: log.With("channel", agent.ViaOOB), Handler: a})
	out.queue2.bind(&oob.Queue2Sink{Loop: loop, Seal: a.SealAlert})
	return loop
}

// listenVMMI builds the VMM-I TLS server around a and opens its listener
// (nil, nil without --vmmi).
func listenVMMI(o Options, a *agent.Agent, log *slog.Logger) (*vmmi.Server, net.Listener, error) {
	if o.VMMIAddr == "" {
		return nil, nil, nil
	}
	tc, err := vmmi.LoadTLS(o.TLSCert, o.TLSKey)
	if err != nil {
		return nil, nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	if o.TLSClientCA == "" {
		return nil, nil, errors.New("--vmmi needs --tls-client-ca: the VMS authenticates with a client certificate")
	}
	cas, err := vmmi.LoadClientCAs(o.TLSClientCA)
	if err != nil {
		return nil, nil, fmt.Errorf("--tls-client-ca: %w", err)
	}
	srv, err := vmmi.New(vmmi.Config{Handler: a, TLS: tc, ClientCAs: cas, KnownPrincipal: a.KnownPrincipal,
		Logger: log.With("channel", agent.ViaVMMI)})
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", o.VMMIAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("--vmmi: %w", err)
	}
	return srv, ln, nil
}

// adoptWindow is how long after a killed agent began an action its
// successor takes the action's VM events for its own (twice the agent's
// default action timeout: libvirtd finishes a start it was given).
const adoptWindow = 2 * time.Minute

// adoptInterrupted: the state changes a killed agent began may still be
// under way in libvirtd; the events of their completion are this agent's
// doing, not changes behind its back (which would raise false alerts).
func adoptInterrupted(j *journal.Journal, hv *lvirt.Libvirt, log *slog.Logger) {
	now := time.Now()
	for _, in := range agent.InterruptedActions(j) {
		if now.Sub(in.At) > adoptWindow {
			continue
		}
		hv.Adopt(in.VM, in.Action, in.At.Add(adoptWindow))
		log.Info("an action begun before the restart may still be under way; its VM events until then are the agent's own",
			"request_id", in.RequestID, "action", in.Action, "vm", in.VM, "begun", in.At, "until", in.At.Add(adoptWindow))
	}
}

// watchLibvirt follows libvirt's lifecycle events in the background and
// returns once it watches (or could not start, or ctx ended): changes made
// behind the agent's back (virsh on the host, the guest, a crash) go to
// every outlet, Queue 2 included.
func watchLibvirt(ctx context.Context, wg *sync.WaitGroup, hv *lvirt.Libvirt, out *outlets, hostID string,
	pol *atomic.Pointer[policy.Policy], log *slog.Logger) {
	watching := make(chan struct{})
	wg.Go(func() {
		err := watch.Run(ctx, watch.Config{Source: hv, Sink: out.all(), Host: hostID,
			Users: func() []string { return pol.Load().AlertUsers() }, Logger: log, Ready: func() { close(watching) }})
		if err != nil {
			log.Warn("cannot watch libvirt events: VM changes made behind the agent's back go unreported", "err", err)
			close(watching)
		}
	})
	select {
	case <-watching:
	case <-ctx.Done():
	}
}

// serveOOB opens the system interface in the background (retrying until
// the BMC answers), then runs the loop; it returns the OOB-I status for
// the ready line once the first attempt is known.
func serveOOB(ctx context.Context, wg *sync.WaitGroup, spec string, conn *lazyConn, loop *oob.Loop, log *slog.Logger) string {
	first := make(chan string, 1)
	wg.Go(func() {
		c, err := openSysif(ctx, spec, log, conn, first)
		if err != nil {
			return
		}
		defer c.Close()
		loop.Run(ctx)
	})
	var st string
	select {
	case st = <-first:
	case <-ctx.Done():
		return "off"
	}
	if strings.HasPrefix(st, "up") {
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		q1s, q2s, err := loop.Probe(pctx)
		pcancel()
		if err != nil {
			st += fmt.Sprintf(", queue status: %v (will retry)", err)
		} else {
			st += fmt.Sprintf(", queue 1 %d/%d, queue 2 %d/%d", q1s.Depth, q1s.Capacity, q2s.Depth, q2s.Capacity)
		}
	}
	return st
}

// reloadOnHangup reloads the authorization list on every SIGHUP until ctx
// ends; a list that does not load leaves the old one in force.
func reloadOnHangup(ctx context.Context, file string, a *agent.Agent, cur *atomic.Pointer[policy.Policy], log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if p, err := policy.LoadFor(file, a.HostID()); err != nil {
				log.Error("policy reload failed; keeping the old list", "file", file, "err", err)
			} else {
				a.SetPolicy(p)
				cur.Store(p)
				log.Info("policy reloaded", "file", file)
			}
		}
	}
}

// finishActions waits up to timeout for actions already begun: the
// channels take no more requests, and each action runs to its end and
// journals its outcome, so a retry gets the truth.
func finishActions(a *agent.Agent, timeout time.Duration, log *slog.Logger) {
	sctx, scancel := context.WithTimeout(context.Background(), timeout)
	defer scancel()
	if err := a.Wait(sctx); err != nil {
		log.Error("stopping with actions still running; their requests will be answered interrupted after the restart", "waited", timeout)
	}
}

// boundLater is an alert.Sink whose sink is bound after it is handed out
// (the agent holds its Queue 2 outlet before the OOB loop that writes
// Queue 2 exists). Until then Send fails, as a write to a system interface
// not yet open does.
type boundLater struct {
	mu   sync.Mutex
	sink alert.Sink
}

var errNotBound = errors.New("queue 2 outlet not set up yet")

func (b *boundLater) bind(s alert.Sink) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sink = s
}

func (b *boundLater) Send(ctx context.Context, al alert.Alert) error {
	b.mu.Lock()
	s := b.sink
	b.mu.Unlock()
	if s == nil {
		return errNotBound
	}
	return s.Send(ctx, al)
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
// knows it), journalled (so an agent killed during it leaves a claim its
// successor adopts, not a false "unauthorized local change" alert), logging
// the outcome; the lab's console shows it.
func startAtBoot(ctx context.Context, a *agent.Agent, vm string, log *slog.Logger) {
	// Like any action, it runs to its end (a stop waits for it): cut short
	// by a SIGTERM, libvirtd would finish the start with no agent knowing
	// it as its own, and the next agent would alert it as a local change.
	if st, err := a.StartAtBoot(ctx, vm); err != nil {
		log.Warn("boot-time start failed", "vm", vm, "err", err)
	} else {
		log.Info("boot-time start done", "vm", vm, "state", st)
	}
}
