package cmd

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/ooblab/ooblab/lab/ctl"
)

// labSignal parses TERM/KILL/STOP/CONT (with or without SIG).
func labSignal(s string) (syscall.Signal, error) {
	switch strings.TrimPrefix(strings.ToUpper(s), "SIG") {
	case "TERM":
		return syscall.SIGTERM, nil
	case "KILL":
		return syscall.SIGKILL, nil
	case "STOP":
		return syscall.SIGSTOP, nil
	case "CONT":
		return syscall.SIGCONT, nil
	}
	return 0, fmt.Errorf("signal %q: want TERM, KILL, STOP or CONT", s)
}

// signal is `signal HOST hvagent TERM|KILL|STOP|CONT`.
func (e *env) signal() *cobra.Command {
	return &cobra.Command{
		Use:   "signal HOST hvagent TERM|KILL|STOP|CONT",
		Short: "signal the hvagent in a host's guest (through the lab shell on the guest's ttyS1); the guest's init restarts it after TERM/KILL, STOP pauses it until CONT",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[1] != "hvagent" {
				return fmt.Errorf("%q: only hvagent can be signalled", args[1])
			}
			sig, err := labSignal(args[2])
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
			defer cancel()
			pid, err := ctl.SignalAgent(ctx, e.dir, args[0], sig)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: hvagent (guest pid %d) sent SIG%s\n", args[0], pid, strings.TrimPrefix(strings.ToUpper(args[2]), "SIG"))
			return nil
		},
	}
}

// restart is `restart bmcsim [--signal KILL|TERM]`.
func (e *env) restart() *cobra.Command {
	var sigName, in string
	c := &cobra.Command{
		Use:   "restart bmcsim",
		Short: "stop bmcsim (--signal KILL: a crash; --in queue1-write: it kills itself inside the next VMS write) and start it again with the same state (queue journals kept)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] != "bmcsim" {
				return fmt.Errorf("%q: only bmcsim can be restarted", args[0])
			}
			sig, err := labSignal(sigName)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(e.ctx, time.Minute)
			defer cancel()
			if in != "" && in != "queue1-write" {
				return fmt.Errorf("--in %q: want queue1-write", in)
			}
			pid, err := ctl.RestartBMCSim(ctx, e.dir, sig, in != "")
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "bmcsim restarted (pid %d)\n", pid)
			return nil
		},
	}
	c.Flags().StringVar(&sigName, "signal", "TERM", "how to stop it: TERM or KILL")
	c.Flags().StringVar(&in, "in", "", "queue1-write: arm bmcsim's fault hook and wait until it kills itself inside the next VMS's Write Queue 1 (journalled, not answered)")
	return c
}
