package cmd

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

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

func (e *env) exec() *cobra.Command {
	return &cobra.Command{
		Use:   "exec HOST -- COMMAND...",
		Short: "run a shell command as root inside a host (the lab's own shell on ttyS1; lab only)",
		Long: `Run a shell command as root inside a lab host, as an administrator logged in
there would, e.g. to change a VM behind hvagent's back:

  lab exec h1 -- virsh destroy web1

The words after -- are joined with spaces and run by /bin/sh in the guest,
over a root shell the lab's guest init starts on its second serial port (a
unix socket in the lab's run folder). Exits with the command's status.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			rc, err := ctl.Exec(e.ctx, e.dir, args[0], strings.Join(args[1:], " "), cmd.OutOrStdout())
			if err != nil {
				return err
			}
			if rc != 0 {
				return exitStatus(rc)
			}
			return nil
		},
	}
}

// exitStatus is a command's wanted exit status, with nothing to print.
type exitStatus int

func (s exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(s)) }

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
