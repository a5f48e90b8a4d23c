package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	br "github.com/ooblab/ooblab/bench/results"
	"github.com/ooblab/ooblab/internal/fileio"
	"github.com/ooblab/ooblab/internal/inventory"
	"github.com/ooblab/ooblab/internal/record"
	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/lab/ctl"
	"github.com/ooblab/ooblab/lab/kcsguest"
	"github.com/ooblab/ooblab/vmsctl/client"
)

const (
	host = "h1"
	vm   = "web1"
)

func inv(c *config) (*inventory.Inventory, error) {
	return fileio.LoadInventory(filepath.Join(c.labDir, "inventory.json"))
}

func newClient(c *config, o client.Options) (*client.Client, error) {
	i, err := inv(c)
	if err != nil {
		return nil, err
	}
	o.Logger = c.log
	return client.New(i, o)
}

// status sends one `vm status h1 web1` within d.
func status(ctx context.Context, cl *client.Client, d time.Duration) (*client.Result, time.Duration, error) {
	cctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	t0 := time.Now()
	res, err := cl.Do(cctx, host, vmsg.CmdStatus, vm)
	return res, time.Since(t0), err
}

// settledCPUs is the host QEMU's CPU use (cores) under which settle
// counts the guest as quiet: an idle lab guest with web1 running uses
// ~0.4 here.
const settledCPUs = 0.8

// settledSeconds is how many seconds in a row the QEMUs must stay below
// settledCPUs: the nested guest's boot has quiet spells of a second or two
// (one run measured 5.8 s after ready with a VMM-I median of 27 ms, where
// a settled lab gives 22-23).
const settledSeconds = 5

// settle waits until the lab is past its boot: hvagent starts web1 after
// it answers (a nested TCG QEMU), and the nested guest boots for seconds
// more on the host's vCPUs; round trips measured meanwhile measure that
// boot more than either channel. Settled: web1 reports running and the
// hosts' QEMU processes (pids) used less than settledCPUs over a second.
// Bounded (2 min, then it measures anyway); it returns how long it waited.
func settle(ctx context.Context, c *config, pids []int) (time.Duration, error) {
	cl, err := newClient(c, client.Options{Via: client.ViaVMMI})
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	t0 := time.Now()
	deadline := t0.Add(2 * time.Minute)
	running := false
	quiet := 0 // seconds in a row below settledCPUs
	var last string
	for time.Now().Before(deadline) {
		if !running {
			res, _, err := status(ctx, cl, 10*time.Second)
			switch {
			case err != nil:
				last = err.Error()
			case res.Reply != nil && len(res.Reply.VMs) == 1:
				last = res.Reply.VMs[0].State
				running = last == "running"
			}
		}
		if running {
			cpus, err := cpuOver(ctx, pids, time.Second)
			if err != nil {
				return 0, err
			}
			if cpus < settledCPUs {
				quiet++
				if quiet >= settledSeconds {
					return time.Since(t0), nil
				}
				continue
			}
			quiet = 0
			last = fmt.Sprintf("%s running, QEMU at %.2f CPUs", vm, cpus)
			continue
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	c.log.Warn("the lab did not settle; measuring anyway", "after", time.Since(t0), "last", last)
	return time.Since(t0), nil
}

// cpuOver is the CPU time the processes used during d, in cores.
func cpuOver(ctx context.Context, pids []int, d time.Duration) (float64, error) {
	a, err := cpuTicks(pids)
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(d):
	}
	b, err := cpuTicks(pids)
	if err != nil {
		return 0, err
	}
	return float64(b-a) / clockTicks / time.Since(t0).Seconds(), nil
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times (100 on Linux).
const clockTicks = 100

// cpuTicks sums utime+stime of the processes (/proc/PID/stat fields 14, 15).
func cpuTicks(pids []int) (uint64, error) {
	var sum uint64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, err
		}
		// The command name (field 2) may hold spaces: count from its ')'.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 13 {
			return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
		}
		for _, s := range f[11:13] { // utime, stime: fields 14 and 15 overall
			v, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
			}
			sum += v
		}
	}
	return sum, nil
}

// rttResult is table 2.
type rttResult struct {
	vmmi, oob stats
	vmmiLat   []time.Duration // the samples, for the report's plot
	oobLat    []time.Duration
	// redfish: the OOB-I over the BMC's Redfish service (the queue OEM
	// action, Queue 2 pushed on SSE), when the inventory names one.
	redfish     stats
	redfishLat  []time.Duration
	oobReads    float64 // queue 2 reads per request
	oobSessions int
	load        string
}

// measureRTT interleaves VMM-I and OOB-I requests one by one, so a change of
// host load falls on both alike. The time is the caller's: Client.Do from
// call to return (sealing, the exchange, opening).
func measureRTT(ctx context.Context, c *config) (*rttResult, error) {
	r := &rttResult{load: br.LoadAvg()}
	vc, err := newClient(c, client.Options{Via: client.ViaVMMI})
	if err != nil {
		return nil, err
	}
	defer vc.Close()
	oc, err := newClient(c, client.Options{Via: client.ViaOOB})
	if err != nil {
		return nil, err
	}
	defer oc.Close()
	clients := []*client.Client{vc, oc}
	if i, err := inv(c); err == nil {
		if h, err := i.Host(host); err == nil && h.BMC.Redfish != "" {
			rc, err := newClient(c, client.Options{Via: client.ViaOOB, OOBOptions: client.OOBOptions{Transport: client.TransportRedfish}})
			if err != nil {
				return nil, err
			}
			defer rc.Close()
			clients = append(clients, rc)
		}
	}
	// Warm up: connection, session, the agent's first libvirt lookup.
	for range 5 {
		for _, cl := range clients {
			if _, _, err := status(ctx, cl, 10*time.Second); err != nil {
				return nil, err
			}
		}
	}
	ob := oc.Channel().(*client.OOB)
	before := ob.Stats()
	var vl, ol, rl []time.Duration
	for i := range c.n {
		for _, cl := range clients {
			res, d, err := status(ctx, cl, 10*time.Second)
			if err != nil {
				return nil, fmt.Errorf("request %d: %w", i, err)
			}
			switch res.Via {
			case client.ViaVMMI:
				vl = append(vl, d)
			case client.ViaOOBRedfish:
				rl = append(rl, d)
			default:
				ol = append(ol, d)
			}
		}
	}
	if len(rl) > 0 {
		r.redfish, r.redfishLat = summarize(rl), rl
	}
	after := ob.Stats()
	r.vmmi, r.oob = summarize(vl), summarize(ol)
	r.vmmiLat, r.oobLat = vl, ol
	r.oobReads = float64(after.Reads-before.Reads) / float64(c.n)
	r.oobSessions = after.Reconnects
	return r, nil
}

// failoverRun is one repetition of table 3.
type failoverRun struct {
	budget     time.Duration // 0: the client's default
	total      time.Duration // unplug start → first OOB-I answer
	setLink    time.Duration // the QMP set_link call itself
	oobLatency time.Duration // the OOB-I exchange inside the answering Do
	tries      int           // Do calls until that answer
	viaVMMI    int           // answers over VMM-I after the unplug
	recover    time.Duration // plug → VMM-I answers again
	err        string
}

// errBudgetTooTight: before any unplug, the auto client with this budget
// already left the VMM-I (its answers take longer than the budget on this
// machine now), so there is no failover to time.
var errBudgetTooTight = errors.New("auto client does not use VMM-I before the unplug")

// measureFailover times table 3. A budget the VMM-I cannot meet even with
// the link plugged is skipped with a note, not a failed section.
func measureFailover(ctx context.Context, c *config) (runs []failoverRun, notes []string, err error) {
	runs, err = measureFailoverRuns(ctx, c, func(b time.Duration, last error) {
		notes = append(notes, fmt.Sprintf("failover budget %v not measured: with the VMM-I plugged the auto client "+
			"did not answer over it within the budget in 20 tries (last: %v); load %s", b, last, br.LoadAvg()))
	})
	return runs, notes, err
}

func measureFailoverRuns(ctx context.Context, c *config, skipped func(time.Duration, error)) ([]failoverRun, error) {
	var runs []failoverRun
	// A VMM-I-only client tells when the link is back.
	vc, err := newClient(c, client.Options{Via: client.ViaVMMI})
	if err != nil {
		return nil, err
	}
	defer vc.Close()
	waitVMMI := func(limit time.Duration) (time.Duration, error) {
		t0 := time.Now()
		deadline := t0.Add(limit)
		var last error
		for time.Now().Before(deadline) {
			if _, _, err := status(ctx, vc, time.Second); err == nil {
				return time.Since(t0), nil
			} else {
				last = err
			}
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			select { // poll interval
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
		return 0, fmt.Errorf("VMM-I did not answer within %v after the plug: %w", limit, last)
	}
	plug := func(up bool) (time.Duration, error) {
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		t0 := time.Now()
		err := ctl.SetLink(qctx, c.labDir, host, "vmmi", up, c.log)
		return time.Since(t0), err
	}
	defer plug(true) //nolint:errcheck // best effort: leave the link plugged
	if _, err := waitVMMI(30 * time.Second); err != nil {
		return nil, err
	}
	for _, b := range c.budgets {
		for range c.reps {
			f, err := failoverOnce(ctx, c, b, plug)
			if errors.Is(err, errBudgetTooTight) {
				skipped(b, errors.Unwrap(err))
				break
			}
			if err != nil {
				return runs, err
			}
			// Plug and wait for the VMM-I before the next repetition.
			t0 := time.Now()
			if _, err := plug(true); err != nil {
				return runs, err
			}
			if _, err := waitVMMI(60 * time.Second); err != nil {
				return runs, err
			}
			f.recover = time.Since(t0)
			runs = append(runs, f)
		}
	}
	return runs, nil
}

func failoverOnce(ctx context.Context, c *config, budget time.Duration, plug func(bool) (time.Duration, error)) (failoverRun, error) {
	f := failoverRun{budget: budget}
	// A fresh auto client per repetition: its OOB-I has no session yet,
	// as for a VMS that never needed the BMC before.
	ac, err := newClient(c, client.Options{Via: client.ViaAuto, Auto: client.AutoOptions{Budget: budget}})
	if err != nil {
		return f, err
	}
	defer ac.Close()
	for i := 0; ; i++ {
		res, _, err := status(ctx, ac, 10*time.Second)
		if err == nil && res.Via == client.ViaVMMI && ac.Health(host).Healthy {
			break
		}
		if i == 20 {
			return f, fmt.Errorf("%w: %w", errBudgetTooTight, err)
		}
	}
	t0 := time.Now()
	if f.setLink, err = plug(false); err != nil {
		return f, err
	}
	deadline := t0.Add(30 * time.Second)
	for time.Now().Before(deadline) {
		f.tries++
		res, _, err := status(ctx, ac, 10*time.Second)
		if err != nil {
			if ctx.Err() != nil {
				return f, ctx.Err()
			}
			f.err = err.Error()
			continue
		}
		if res.Via == client.ViaVMMI {
			f.viaVMMI++
			continue
		}
		f.total, f.oobLatency = time.Since(t0), res.Latency
		return f, nil
	}
	return f, fmt.Errorf("no answer over OOB-I within 30 s of the unplug (last error: %s)", f.err)
}

// payloadResult is table 4 (the sealed side).
type payloadResult struct {
	metaBytes, sealedBytes, records int
	lat                             stats
	small                           time.Duration // median of a small request (table 2)
	smallSealed                     int
	writeRetries, fullWaits         int
	load                            string
}

func measurePayload(ctx context.Context, c *config, rtt *rttResult) (*payloadResult, error) {
	r := &payloadResult{load: br.LoadAvg()}
	oc, err := newClient(c, client.Options{Via: client.ViaOOB})
	if err != nil {
		return nil, err
	}
	defer oc.Close()
	if _, _, err := status(ctx, oc, 10*time.Second); err != nil {
		return nil, err
	}
	blob := func() string {
		b := make([]byte, c.payload*3/4+3)
		rand.Read(b)
		return base64.RawStdEncoding.EncodeToString(b)[:c.payload]
	}
	t, err := oc.Target(host)
	if err != nil {
		return nil, err
	}
	size := func(req *vmsg.Request) (int, error) {
		_, env, err := t.Seal(req) // the same size as what Send seals
		return len(env), err
	}
	probe := &vmsg.Request{ID: client.NewID(), Command: vmsg.CmdStatus, VM: vm, Metadata: map[string]string{"blob": blob()},
		Principal: oc.Inventory().Principal, IssuedMs: time.Now().UnixMilli()}
	if r.sealedBytes, err = size(probe); err != nil {
		return nil, err
	}
	r.metaBytes = c.payload
	r.records = (r.sealedBytes + record.MaxPayload - 1) / record.MaxPayload
	small := &vmsg.Request{ID: client.NewID(), Command: vmsg.CmdStatus, VM: vm,
		Principal: oc.Inventory().Principal, IssuedMs: time.Now().UnixMilli()}
	if r.smallSealed, err = size(small); err != nil {
		return nil, err
	}
	if rtt != nil {
		r.small = rtt.oob.median
	}
	ob := oc.Channel().(*client.OOB)
	before := ob.Stats()
	var ls []time.Duration
	for i := range c.payloadN {
		req := &vmsg.Request{Command: vmsg.CmdStatus, VM: vm, Metadata: map[string]string{"blob": blob()}}
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		t0 := time.Now()
		res, err := oc.Send(cctx, host, req)
		d := time.Since(t0)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("large request %d: %w", i, err)
		}
		if res.Via != client.ViaOOB {
			return nil, fmt.Errorf("large request %d came back over %s", i, res.Via)
		}
		ls = append(ls, d)
	}
	after := ob.Stats()
	r.lat = summarize(ls)
	r.writeRetries, r.fullWaits = after.WriteRetries-before.WriteRetries, after.FullWaits-before.FullWaits
	return r, nil
}

// kcsResult is the raw KCS ceiling (bench/kcs's guest, bmcsim in process).
type kcsResult struct {
	rows map[string]map[string]string // measurement → fields
	load string
}

func measureKCS(ctx context.Context, c *config) (*kcsResult, error) {
	r := &kcsResult{rows: map[string]map[string]string{}, load: br.LoadAvg()}
	env, err := kcsguest.FindEnv()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(c.dir, "kcs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	initrd, err := kcsguest.BuildInitrd(ctx, dir, env, "-mode", "bench", "-n", strconv.Itoa(c.kcsN))
	if err != nil {
		return nil, err
	}
	bctx, bcancel := context.WithCancel(ctx)
	defer bcancel()
	b, err := kcsguest.StartBMC(bctx, c.log)
	if err != nil {
		return nil, err
	}
	defer func() { bcancel(); b.Wait() }()
	if err := b.PutReadRecord(ctx); err != nil {
		return nil, fmt.Errorf("the oemread-240 record: %w", err)
	}
	g, err := kcsguest.Boot(ctx, env, dir, initrd, b.Port)
	if err != nil {
		return nil, err
	}
	defer g.Stop()
	expect := func(prefix string, d time.Duration) (string, error) {
		cctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		return g.Expect(cctx, prefix)
	}
	if _, err := expect("KCSGUEST-DEVID", 60*time.Second); err != nil {
		return nil, err
	}
	for { // the guest's rows, then DONE
		l, err := expect("KCSGUEST-", 120*time.Second)
		if err != nil {
			return nil, err
		}
		if strings.HasPrefix(l, "KCSGUEST-DONE") {
			break
		}
		if !strings.HasPrefix(l, "KCSGUEST-BENCH") {
			return nil, fmt.Errorf("guest: %s", l)
		}
		f := kcsguest.ParseFields(l)
		r.rows[f["name"]] = f
	}
	for _, m := range []string{"oemwrite-240", "oemread-240"} {
		if r.rows[m] == nil {
			return nil, fmt.Errorf("the guest reported no %s row", m)
		}
	}
	return r, nil
}
