// Package simfleet brings up a simulated fleet on one machine, without QEMU:
// one bmcsim process serving N BMCs (`bmcsim --fleet N`: RMCP+ on N UDP
// ports, the QEMU chardev system interface on N TCP ports) and N hosts in
// the calling process, each running hvagent's own code (hvagent/run.Run)
// over its BMC's chardev against libvirt's test:///default, plus an
// inventory for vmsctl with a sealing key per host.
//
//	vmsctl ──RMCP+──▶ bmcsim --fleet N ◀──chardev (TCP)── N × hvagent run.Run ──▶ test:///default
//	  (inventory.json: h-0 … h-(N-1))        (one process)       (this process)
//
// bin/lab sim and bench/fleet use it.
package simfleet

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ooblab/ooblab/hvagent/run"
	"github.com/ooblab/ooblab/internal/fileio"
	"github.com/ooblab/ooblab/internal/ident"
	"github.com/ooblab/ooblab/internal/inventory"
	"github.com/ooblab/ooblab/internal/seal"
)

// User and Principal are the fleet's BMC account (operator) and the VMS
// principal its hosts' authorization lists allow read-only commands for.
const (
	User      = "vms"
	Principal = "vms"
)

// Options describe a fleet.
type Options struct {
	N      int    // hosts (and BMCs), 1..10000
	BinDir string // folder with bmcsim
	Dir    string // work folder: keys, inventory, journals, bmcsim.log
	// LANBase and KCSBase are the first ports; 0 finds N consecutive free
	// ports of each kind.
	LANBase, KCSBase int
	// HostLog receives the hosts' logs (nil: discarded).
	HostLog *slog.Logger
}

// Fleet is a running fleet. Stop ends it.
type Fleet struct {
	N                int
	LANBase, KCSBase int
	Inventory        string        // inventory.json path
	BMCLog           string        // bmcsim's log
	BMCPid           int           // the bmcsim process
	BMCUp            time.Duration // bmcsim start to the N-th BMC listening
	HostsUp          time.Duration // hosts' start to the last one reaching its BMC
	IdleRSS          float64       // bmcsim's RSS (MiB) once every BMC listened, before any host

	cmd      *exec.Cmd
	stopHost context.CancelFunc
	hosts    sync.WaitGroup
	waited   chan struct{}
	stopOnce sync.Once
}

// Start brings a fleet up: bmcsim --fleet, its idle RSS, the hosts (each
// waits for its BMC), the inventory. On error everything started is stopped.
func Start(ctx context.Context, o Options) (_ *Fleet, err error) {
	if o.N < 1 || o.N > 10000 {
		return nil, fmt.Errorf("simfleet: %d hosts: want 1..10000", o.N)
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, err
	}
	if o.LANBase == 0 || o.KCSBase == 0 {
		if o.LANBase, o.KCSBase, err = FreeRanges(o.N); err != nil {
			return nil, err
		}
	}
	log := o.HostLog
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	f := &Fleet{N: o.N, LANBase: o.LANBase, KCSBase: o.KCSBase, BMCLog: filepath.Join(o.Dir, "bmcsim.log"), waited: make(chan struct{})}
	defer func() {
		if err != nil {
			f.Stop()
		}
	}()
	pwFile := filepath.Join(o.Dir, "bmc.pw")
	if err := os.WriteFile(pwFile, []byte(randomPassword()), 0o600); err != nil {
		return nil, err
	}
	if err := f.startBMCs(ctx, o, pwFile); err != nil {
		return nil, err
	}
	inv, err := f.startHosts(ctx, o, log)
	if err != nil {
		return nil, err
	}
	f.Inventory = filepath.Join(o.Dir, "inventory.json")
	if err := fileio.SaveInventory(inv, f.Inventory); err != nil {
		return nil, err
	}
	return f, nil
}

// randomPassword is a 16-character BMC password (the IPMI v2.0 limit is 20).
func randomPassword() string {
	const abc = "abcdefghijkmnpqrstuvwxyzACDEFGHJKLMNPQRSTUVWXYZ23456789"
	b := make([]byte, 16)
	for i := range b {
		b[i] = abc[rand.IntN(len(abc))]
	}
	return string(b)
}

func (f *Fleet) startBMCs(ctx context.Context, o Options, pwFile string) error {
	logf, err := os.Create(f.BMCLog)
	if err != nil {
		return err
	}
	defer logf.Close()
	start := time.Now()
	f.cmd = exec.Command(filepath.Join(o.BinDir, "bmcsim"), "--fleet", strconv.Itoa(o.N), "--name", "h",
		"--lan", "127.0.0.1:"+strconv.Itoa(f.LANBase), "--kcs", "127.0.0.1:"+strconv.Itoa(f.KCSBase),
		"--user", User+":@"+pwFile+":operator", "--log-level", "info")
	f.cmd.Stderr = logf
	if err := f.cmd.Start(); err != nil {
		return fmt.Errorf("simfleet: start bmcsim: %w", err)
	}
	f.BMCPid = f.cmd.Process.Pid
	go func() { _ = f.cmd.Wait(); close(f.waited) }()
	if err := f.waitBMCs(ctx, o.N); err != nil {
		return err
	}
	f.BMCUp = time.Since(start)
	f.IdleRSS, err = RSSMiB(f.BMCPid)
	return err
}

// waitBMCs waits until bmcsim logged n "LAN channel up" lines (each BMC
// logs one once its sockets are open), bmcsim exited, or ctx ended.
func (f *Fleet) waitBMCs(ctx context.Context, n int) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		c, err := countLines(f.BMCLog, "LAN channel up")
		if err == nil && c >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("simfleet: %d of %d BMCs up: %w (log %s)", c, n, ctx.Err(), f.BMCLog)
		case <-f.waited:
			b, _ := os.ReadFile(f.BMCLog)
			return fmt.Errorf("simfleet: bmcsim exited: %s", tail(string(b)))
		case <-t.C:
		}
	}
}

func (f *Fleet) startHosts(ctx context.Context, o Options, log *slog.Logger) (*inventory.Inventory, error) {
	// The VMS principal's signing key (internal/ident): every request is
	// signed with it and the policy names its public key.
	pk, err := ident.GenerateKey()
	if err != nil {
		return nil, err
	}
	if err := ident.WritePrivateKey(filepath.Join(o.Dir, Principal+".key"), pk, true); err != nil {
		return nil, err
	}
	inv := &inventory.Inventory{Principal: Principal,
		Credentials: []inventory.Credential{{Principal: Principal, KeyFile: Principal + ".key"}}}
	policy := filepath.Join(o.Dir, "authz.toml")
	polText := fmt.Sprintf("read_only_default = true\n[principals.%s]\nkeys = [%q]\n", Principal, ident.FormatPublicKey(pk.Public().(ed25519.PublicKey)))
	if err := os.WriteFile(policy, []byte(polText), 0o600); err != nil {
		return nil, err
	}
	hctx, cancel := context.WithCancel(context.Background())
	f.stopHost = cancel
	var ready sync.WaitGroup
	var failed atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	for i := range o.N {
		name := "h-" + strconv.Itoa(i)
		key, err := seal.Enroll(name)
		if err != nil {
			return nil, err
		}
		kf := filepath.Join(o.Dir, name+".key")
		if err := os.WriteFile(kf, []byte(key.URI()+"\n"), 0o600); err != nil {
			return nil, err
		}
		inv.Hosts = append(inv.Hosts, inventory.Host{Name: name, HostID: name, SecretFile: name + ".key",
			BMC: inventory.BMC{Addr: "127.0.0.1:" + strconv.Itoa(f.LANBase+i), User: User, PasswordFile: "bmc.pw", CipherSuite: 17}})
		ready.Add(1)
		var once sync.Once
		done := func() { once.Do(ready.Done) }
		f.hosts.Go(func() {
			defer done()
			err := run.Run(hctx, run.Options{HostID: name, KeyFile: kf, PolicyFile: policy, LibvirtURI: "test:///default",
				Sysif: "chardev:127.0.0.1:" + strconv.Itoa(f.KCSBase+i), JournalFile: filepath.Join(o.Dir, name+".journal"),
				Logger: log.With("host", name),
				Ready: func(st run.Status) {
					if !strings.HasPrefix(st.OOB, "up") {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, fmt.Errorf("host %s: system interface %s", name, st.OOB))
					}
					done()
				}})
			if err != nil && hctx.Err() == nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, fmt.Errorf("host %s: %w", name, err))
			}
		})
	}
	wait := make(chan struct{})
	go func() { ready.Wait(); close(wait) }()
	select {
	case <-wait:
	case <-ctx.Done():
		return nil, fmt.Errorf("simfleet: hosts not ready: %w", ctx.Err())
	}
	if k := failed.Load(); k > 0 {
		return nil, fmt.Errorf("simfleet: %d of %d hosts failed, first: %v", k, o.N, firstErr.Load())
	}
	f.HostsUp = time.Since(start)
	return inv, nil
}

// Stop ends the hosts, then bmcsim (SIGTERM), and waits for both.
func (f *Fleet) Stop() {
	f.stopOnce.Do(func() {
		if f.stopHost != nil {
			f.stopHost()
			f.hosts.Wait()
		}
		if f.cmd != nil && f.cmd.Process != nil {
			_ = f.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-f.waited:
			case <-time.After(10 * time.Second):
				_ = f.cmd.Process.Kill()
				<-f.waited
			}
		}
	})
}

func countLines(path, s string) (int, error) {
	fh, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer fh.Close()
	c := 0
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			c++
		}
	}
	return c, sc.Err()
}

func tail(s string) string {
	if len(s) > 600 {
		return "…" + s[len(s)-600:]
	}
	return s
}

// RSSMiB reads a process's resident set from /proc.
func RSSMiB(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				return 0, err
			}
			return float64(kb) / 1024, nil
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}

// FreeRanges finds n consecutive free UDP ports and n consecutive free TCP
// ports on 127.0.0.1 by binding them all, then releases them for bmcsim.
// (Another process may take one in between; bmcsim then fails and says
// which.)
func FreeRanges(n int) (lan, kcs int, err error) {
	if 2*n > 30000 {
		return 0, 0, fmt.Errorf("simfleet: %d ports is too many for one address", 2*n)
	}
	// Below the kernel's ephemeral range when it fits: a port there can be
	// taken by any outgoing connection between this probe and bmcsim's bind.
	lo, hi := 10000, ephemeralStart()
	if hi-lo < 2*n+1 {
		lo, hi = 10000, 65535
	}
	for range 50 {
		base := lo + rand.IntN(hi-lo-2*n)
		if bindAll(base, n) && bindAll(base+n, n) {
			return base, base + n, nil
		}
	}
	return 0, 0, fmt.Errorf("simfleet: no %d free consecutive ports found", 2*n)
}

// ephemeralStart is the first port of the kernel's ephemeral range (32768
// when unknown).
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) < 1 {
		return 32768
	}
	v, err := strconv.Atoi(f[0])
	if err != nil || v < 1024 {
		return 32768
	}
	return v
}

func bindAll(base, n int) bool {
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	for p := base; p < base+n; p++ {
		u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			return false
		}
		closers = append(closers, u)
		t, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			return false
		}
		closers = append(closers, t)
	}
	return true
}
