package cmd

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/ooblab/ooblab/lab/ctl"
)

func (e *env) console() *cobra.Command {
	var follow bool
	c := &cobra.Command{
		Use: "console HOST", Short: "show a host's serial console (-f to follow)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := ctl.ConsolePath(e.dir, args[0])
			if err != nil {
				return err
			}
			return tail(e.ctx, cmd.OutOrStdout(), e.stderr, p, follow)
		},
	}
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output")
	return c
}

func (e *env) logs() *cobra.Command {
	return &cobra.Command{
		Use: "logs HOST", Short: "show a host's QEMU log, console and the bmcsim log", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := ctl.ConsolePath(e.dir, args[0])
			if err != nil {
				return err
			}
			for _, f := range []string{filepath.Join(filepath.Dir(p), "qemu.log"), p, filepath.Join(e.dir, "bmcsim.log")} {
				fmt.Fprintf(cmd.OutOrStdout(), "==> %s <==\n", f)
				if err := tail(e.ctx, cmd.OutOrStdout(), e.stderr, f, false); err != nil {
					fmt.Fprintln(cmd.OutOrStdout(), err)
				}
			}
			return nil
		},
	}
}

// tail copies path to w, and with follow keeps copying what is appended.
func tail(ctx context.Context, w, stderr io.Writer, path string, follow bool) error {
	if !follow {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(w, f)
		return err
	}
	cmd := exec.CommandContext(ctx, "tail", "-n", "+1", "-f", path)
	cmd.Stdout, cmd.Stderr = w, stderr
	return cmd.Run()
}
