// Package app runs a bmcsim process: every configured BMC with its LAN
// channel, OOB-I queues and QEMU system interface, and the process's metrics
// endpoint.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/ooblab/ooblab/bmcsim/config"
	"github.com/ooblab/ooblab/bmcsim/kcs"
	"github.com/ooblab/ooblab/bmcsim/metrics"
	"github.com/ooblab/ooblab/bmcsim/sensors"
	"github.com/ooblab/ooblab/internal/oem"
)

// Run starts every BMC of f and blocks until ctx ends or one fails.
func Run(ctx context.Context, f *config.File, log *slog.Logger) error {
	if len(f.BMCs) == 0 {
		return errors.New("no BMC configured: give --lan and --user, or --config FILE")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.New(reg)

	g, ctx := errgroup.WithContext(ctx)
	names := map[string]bool{}
	models := map[string]*sensors.Model{} // admin.go
	for i := range f.BMCs {
		if n := f.BMCs[i].Name; n != "" && names[n] {
			return fmt.Errorf("two BMCs named %q", n)
		}
		h, err := NewHost(f.BMCs[i], HostOptions{Logger: log, Metrics: m, Registerer: reg})
		if err != nil {
			return err
		}
		defer h.Close()
		names[h.BMC.Config.Name] = true
		models[h.BMC.Config.Name] = h.BMC.Sensors()
		g.Go(func() error { return h.Serve(ctx) })
	}
	if f.Metrics != "" {
		if err := serveMetrics(ctx, g, f, reg, log); err != nil {
			return err
		}
	}
	if f.Admin != "" {
		if err := serveAdmin(ctx, g, f.Admin, models, log); err != nil {
			return err
		}
	}
	return g.Wait()
}

// serveMetrics serves /metrics (and, with f.Pprof, Go's profiler) until ctx ends.
func serveMetrics(ctx context.Context, g *errgroup.Group, f *config.File, reg *prometheus.Registry, log *slog.Logger) error {
	ln, err := net.Listen("tcp", f.Metrics)
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if f.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Info("metrics endpoint up", "addr", ln.Addr().String(), "path", "/metrics")
	g.Go(func() error {
		go func() { <-ctx.Done(); _ = srv.Close() }()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	return nil
}

// notifier pushes a Queue1Notify into the host's receive message queue when
// a write lands in Queue 1 while the host sleeps (its last read found the
// queue empty), so the agent wakes at once. The agent then reads until the
// queue is empty, so one push per burst is enough: a push per record (each
// read that acknowledges one changes the depth) costs the guest a Get
// Message round trip per record and made draining ~10x slower. The queue
// decides "the host sleeps" under its own lock (queue.Options.OnQueue1Wake),
// so concurrent writes and reads cannot make the notifier miss a wake.
type notifier struct {
	iana  oem.IANA
	log   *slog.Logger
	mu    sync.Mutex
	srv   *kcs.Server
	depth func() int // Queue 1's depth now
	// pushes counts notifications pushed into the receive message queue.
	pushes atomic.Int64
}

func (n *notifier) set(srv *kcs.Server) {
	n.mu.Lock()
	n.srv = srv
	n.mu.Unlock()
}

func (n *notifier) server() *kcs.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv
}

// queue1Wake is queue.Options.OnQueue1Wake.
func (n *notifier) queue1Wake() { n.push(n.server(), n.depth()) }

// push sends one Queue1Notify unless one is still waiting to be fetched
// (the host wakes when it fetches that one, and reads the queue to empty).
func (n *notifier) push(srv *kcs.Server, depth int) {
	if srv == nil || srv.QueueLen() > 0 {
		return // no host, or a notification is already waiting
	}
	if depth > 0xFFFF {
		depth = 0xFFFF
	}
	data := oem.Queue1Notify{IANA: n.iana, Depth: uint16(depth)}.Pack()
	if err := srv.Push(uint8(oem.NetFnOEMGroupRequest), uint8(oem.CmdQueue1Notify), data); err != nil {
		n.log.Debug("queue 1 notification not pushed", "err", err)
		return
	}
	n.pushes.Add(1)
}
