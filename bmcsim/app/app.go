// Package app runs a bmcsim process: every configured BMC with its LAN
// channel, and the process's metrics endpoint.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/ooblab/ooblab/bmcsim/queue"
	"github.com/ooblab/ooblab/bmcsim/sim"
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
		q, err := queue.Open(queue.Options{
			Capacity1:  b.Config.QueueCapacity,
			Capacity2:  b.Config.QueueCapacity,
			StateDir:   b.Config.State,
			Registerer: prometheus.WrapRegistererWith(prometheus.Labels{"bmc": b.Config.Name}, reg),
			Logger:     log.With("bmc", b.Config.Name),
		})
		if err != nil {
			return fmt.Errorf("bmc %s: queues: %w", b.Config.Name, err)
		}
		defer q.Close()
		q.Register(b.Registry, b.Config.IANA)
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
