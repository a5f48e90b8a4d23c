package cmd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path"
	"path/filepath"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/spf13/cobra"

	"github.com/ooblab/ooblab/internal/fileio"
	"github.com/ooblab/ooblab/lab/ctl"
	"github.com/ooblab/ooblab/lab/ui"
)

// ui is `ui [--addr 127.0.0.1:PORT]`: the lab's web page (lab/ui).
func (e *env) ui() *cobra.Command {
	var addr string
	var poll time.Duration
	c := &cobra.Command{
		Use:   "ui",
		Short: "serve the lab's web page (both channels live, VMs, commands, alerts; unplug the VMM-I) on loopback, behind the lab's token",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if host, _, err := net.SplitHostPort(addr); err != nil || !net.ParseIP(host).IsLoopback() {
				return fmt.Errorf("--addr %q: the page listens on a loopback address only", addr)
			}
			inv, err := fileio.LoadInventory(filepath.Join(e.dir, "inventory.json"))
			if err != nil {
				return fmt.Errorf("no lab inventory (lab up first): %w", err)
			}
			token, err := ctl.UIToken(e.dir)
			if err != nil {
				return err
			}
			log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
			// The lab knows its hosts' policies: the page marks protected
			// VMs before anyone is challenged (only the protected globs
			// are read; the policy's secrets stay where they are).
			globs := map[string][]string{}
			for _, h := range inv.Hosts {
				var p struct {
					Protected []string `toml:"protected"`
				}
				if _, err := toml.DecodeFile(filepath.Join(e.dir, h.Name, "policy.toml"), &p); err != nil {
					log.Warn("lab ui: no policy for the protected marks", "host", h.Name, "err", err)
				}
				globs[h.Name] = p.Protected
			}
			protected := func(host, vm string) bool {
				for _, g := range globs[host] {
					if ok, _ := path.Match(g, vm); ok {
						return true
					}
				}
				return false
			}
			srv, err := ui.New(ui.Config{Inventory: inv, Token: token, Poll: poll, Logger: log, Protected: protected,
				SetLink: func(ctx context.Context, host string, up bool) error {
					return ctl.SetLink(ctx, e.dir, host, "vmmi", up, log)
				}})
			if err != nil {
				return err
			}
			defer srv.Close()
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return err
			}
			hs := &http.Server{Handler: srv, ReadHeaderTimeout: 5 * time.Second}
			ctx, cancel := context.WithCancel(e.ctx)
			defer cancel()
			go srv.Run(ctx)
			go func() {
				<-ctx.Done()
				sctx, c := context.WithTimeout(context.Background(), 2*time.Second)
				defer c()
				_ = hs.Shutdown(sctx)
			}()
			fmt.Fprintf(cmd.OutOrStdout(), "lab ui: %s\n", ctl.UIURL(ln.Addr().String(), token))
			if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	c.Flags().StringVar(&addr, "addr", "127.0.0.1:0", "loopback address to listen on")
	c.Flags().DurationVar(&poll, "poll", 2*time.Second, "how often the hosts' channels are checked")
	return c
}
