// Package cmd is bin/lab's command tree (cobra): up, down, status,
// unplug/plug, console, exec and logs over lab/ctl. lab/main.go only wires
// signals to Run.
package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/ooblab/ooblab/lab/ctl"
)

// env is what every command shares: the state folder and the logger.
type env struct {
	ctx     context.Context
	dir     string
	verbose bool
	log     *slog.Logger
	stderr  io.Writer
}

// Run runs bin/lab with args and returns its exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &env{ctx: ctx, stderr: stderr}
	root := &cobra.Command{
		Use:           "lab",
		Short:         "bring the ooblab lab up and control it",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(*cobra.Command, []string) {
			lvl := slog.LevelWarn
			if e.verbose {
				lvl = slog.LevelDebug
			}
			e.log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
		},
	}
	root.PersistentFlags().StringVar(&e.dir, "dir", ctl.Dir(), "lab state folder ($OOBLAB_LAB_DIR)")
	root.PersistentFlags().BoolVarP(&e.verbose, "verbose", "v", false, "log progress and debug detail")
	root.AddCommand(e.up(), e.down(), e.status(), e.link(false), e.link(true), e.console(), e.exec(), e.logs(), e.sim(), e.signal(), e.restart(), e.ui(), e.demo(), e.sensor())
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		var st exitStatus
		if errors.As(err, &st) {
			return int(st)
		}
		fmt.Fprintln(stderr, "lab:", err)
		return 1
	}
	return 0
}
