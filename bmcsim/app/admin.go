package app

import (
	"context"
	"log/slog"

	"golang.org/x/sync/errgroup"

	"github.com/ooblab/ooblab/bmcsim/admin"
	"github.com/ooblab/ooblab/bmcsim/sensors"
)

// serveAdmin serves the simulation control (bmcsim/admin) on the unix
// socket at path until ctx ends.
func serveAdmin(ctx context.Context, g *errgroup.Group, path string, models map[string]*sensors.Model, log *slog.Logger) error {
	ln, err := admin.Listen(path)
	if err != nil {
		return err
	}
	h := admin.Handler(func(name string) (*sensors.Model, bool) {
		m, ok := models[name]
		return m, ok
	}, log)
	log.Info("admin socket up (simulation control: sensor pins)", "path", path)
	g.Go(func() error { return admin.Serve(ctx, ln, h) })
	return nil
}
