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
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/ooblab/ooblab/bmcsim/kcs"
	"github.com/ooblab/ooblab/bmcsim/queue"
	"github.com/ooblab/ooblab/bmcsim/sim"
	"github.com/ooblab/ooblab/internal/oem"
)

// Run starts every BMC of f and blocks until ctx ends or one fails.
func Run(ctx context.Context, f *sim.File, log *slog.Logger) error {
	if len(f.BMCs) == 0 {
		return errors.New("no BMC configured: give --lan and --user, or --config FILE")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := sim.NewMetrics(reg)

	g, ctx := errgroup.WithContext(ctx)
	names := map[string]bool{}
	for i := range f.BMCs {
		b, err := sim.New(f.BMCs[i], log, m)
		if err != nil {
			return err
		}
		if names[b.Config.Name] {
			return fmt.Errorf("two BMCs named %q", b.Config.Name)
		}
		names[b.Config.Name] = true
		blog := log.With("bmc", b.Config.Name)
		n := &notifier{iana: oem.IANA(b.Config.IANA), log: blog, empty: true}
		q, err := queue.Open(queue.Options{
			Capacity1:      b.Config.QueueCapacity,
			Capacity2:      b.Config.QueueCapacity,
			ReaderTTL:      b.Config.ReaderTTL.Duration,
			StateDir:       b.Config.State,
			Registerer:     prometheus.WrapRegistererWith(prometheus.Labels{"bmc": b.Config.Name}, reg),
			Logger:         blog,
			OnQueue1Change: n.queue1Changed,
		})
		if err != nil {
			return fmt.Errorf("bmc %s: queues: %w", b.Config.Name, err)
		}
		defer q.Close()
		q.Register(b.Registry, b.Config.IANA)
		if d1 := q.Queue1().Len(); d1 > 0 || q.Queue2().Len() > 0 {
			blog.Info("queues restored from journal", "queue1", d1, "queue2", q.Queue2().Len(), "state", b.Config.State)
		}
		if b.Config.KCS != "" {
			if err := serveKCS(ctx, g, b, q, n, blog); err != nil {
				return err
			}
		}
		conn, err := b.ListenLAN()
		if err != nil {
			return err
		}
		g.Go(func() error { return b.ServeLAN(ctx, conn) })
	}
	if f.Metrics != "" {
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
	}
	return g.Wait()
}

// notifier pushes a Queue1Notify into the host's receive message queue when
// Queue 1 goes from empty to non-empty, so the agent wakes at once. The agent
// then reads until the queue is empty, so one push per burst is enough: a
// push per record (each read that acknowledges one changes the depth) costs
// the guest a Get Message round trip per record and made draining ~10x slower.
type notifier struct {
	iana  oem.IANA
	log   *slog.Logger
	mu    sync.Mutex
	srv   *kcs.Server
	empty bool // Queue 1 was last seen empty
}

func (n *notifier) set(srv *kcs.Server) {
	n.mu.Lock()
	n.srv = srv
	n.mu.Unlock()
}

func (n *notifier) queue1Changed(depth int) {
	n.mu.Lock()
	if depth <= 0 {
		n.empty = true
		n.mu.Unlock()
		return
	}
	if !n.empty {
		n.mu.Unlock()
		return // the host is draining this burst already
	}
	n.empty = false
	srv := n.srv
	n.mu.Unlock()
	n.push(srv, depth)
}

// push sends one Queue1Notify unless one is still waiting to be fetched.
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
	}
}

// serveKCS starts the BMC's system interface for QEMU's ipmi-bmc-extern
// chardev and ties chassis power to the guest.
func serveKCS(ctx context.Context, g *errgroup.Group, b *sim.BMC, q *queue.Queues, n *notifier, log *slog.Logger) error {
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
	srv := kcs.New(b.IPMI, b.Registry, log, append(opts,
		kcs.WithOnRequest(func(netfn, cmd, cc uint8) {
			log.Debug("system interface request", "netfn", netfn, "cmd", cmd, "cc", cc)
		}),
		kcs.WithOnConnState(func(up bool) {
			log.Info("system interface", "qemu_connected", up)
			if d := q.Queue1().Len(); up && d > 0 {
				n.mu.Lock()
				srv := n.srv
				n.mu.Unlock()
				n.push(srv, d) // records waited while the host was away
			}
		}))...)
	n.set(srv)
	b.SetPowerDriver(&hostPower{kcs: srv, qmp: b.Config.QMP, log: log})
	log.Info("system interface listening", "addr", ln.Addr().String())
	g.Go(func() error {
		err := srv.Serve(ctx, ln)
		if err != nil && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("bmc %s: kcs: %w", b.Config.Name, err)
		}
		return nil
	})
	return nil
}
