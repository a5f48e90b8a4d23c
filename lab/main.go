// Command lab brings up and controls the ooblab lab: simulated BMCs (one
// bmcsim process) and one QEMU hypervisor-host guest per host, with libvirt
// and hvagent inside.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ooblab/ooblab/lab/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var (
		dir     string
		verbose bool
		log     *slog.Logger
	)
	root := &cobra.Command{
		Use:           "lab",
		Short:         "bring the ooblab lab up and control it",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(*cobra.Command, []string) {
			lvl := slog.LevelWarn
			if verbose {
				lvl = slog.LevelDebug
			}
			log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
		},
	}
	root.PersistentFlags().StringVar(&dir, "dir", ctl.Dir(), "lab state folder ($OOBLAB_LAB_DIR)")
	root.PersistentFlags().BoolVarP(&verbose, "verbose", "v", false, "log progress and debug detail")

	var o ctl.Options
	var noProbe bool
	up := &cobra.Command{
		Use:   "up",
		Short: "start the BMCs and hypervisor hosts; return when every agent answers on both channels",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Dir = dir
			o.Out = cmd.OutOrStdout()
			if !noProbe {
				o.Probe = ctl.ProbeBoth
			}
			ilog := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
			st, err := ctl.Up(ctx, o, ilog)
			if err != nil {
				return err
			}
			printSummary(cmd.OutOrStdout(), dir, st)
			return nil
		},
	}
	up.Flags().IntVar(&o.Hosts, "hosts", 1, "number of hypervisor hosts")
	up.Flags().StringVar(&o.Accel, "accel", "", "kvm or tcg (default: probe KVM, fall back to TCG)")
	up.Flags().BoolVar(&o.Force, "rebuild", false, "rebuild the guest image even if cached")
	up.Flags().StringVar(&o.BinDir, "bin", "", "folder with bmcsim and hvagent (default: beside lab)")
	up.Flags().IntVar(&o.BasePort, "base-port", 6230, "first BMC LAN port; KCS +100, VMM-I +2000, metrics +3000")
	up.Flags().BoolVar(&noProbe, "no-probe", false, "ready when the agent starts, without asking it over both channels")

	down := &cobra.Command{
		Use: "down", Short: "stop everything the lab started", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			err := ctl.Down(ctx, dir, cmd.OutOrStdout(), log)
			if err == ctl.ErrNotUp {
				fmt.Fprintln(cmd.OutOrStdout(), "no lab is up")
				return nil
			}
			return err
		},
	}

	var asJSON bool
	status := &cobra.Command{
		Use: "status", Short: "show hosts, BMCs, both channels and the nested VMs", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, rows, err := ctl.Status(ctx, dir, log, ctl.ProbeStatus(dir))
			if err != nil {
				return err
			}
			if asJSON {
				e := json.NewEncoder(cmd.OutOrStdout())
				e.SetIndent("", "  ")
				return e.Encode(rows)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			bm := "stopped"
			if ctl.BMCSimAlive(st) {
				bm = fmt.Sprintf("running (pid %d)", st.BMCSim.Pid)
			}
			fmt.Fprintf(w, "bmcsim: %s\taccel: %s\n\n", bm, st.Accel)
			fmt.Fprintln(w, "HOST\tQEMU\tBMC (LAN)\tVMM-I\tLINK\tVMM-I CHANNEL\tOOB-I CHANNEL\tVMS")
			for _, r := range rows {
				link := "plugged"
				if !r.VMMILink {
					link = "unplugged"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.QEMU, r.BMCLAN, r.VMMI, link, r.VMMIState, r.OOBState, strings.Join(r.VMs, ", "))
			}
			return w.Flush()
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "JSON output")

	link := func(up bool) *cobra.Command {
		use, short := "unplug HOST vmmi", "cut a host's VMM-I link (QMP set_link off)"
		if up {
			use, short = "plug HOST vmmi", "restore a host's VMM-I link"
		}
		return &cobra.Command{
			Use: use, Short: short, Args: cobra.ExactArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				if err := ctl.SetLink(cctx, dir, args[0], args[1], up, log); err != nil {
					return err
				}
				state := "unplugged"
				if up {
					state = "plugged"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s %s\n", args[0], args[1], state)
				return nil
			},
		}
	}

	var follow bool
	console := &cobra.Command{
		Use: "console HOST", Short: "show a host's serial console (-f to follow)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := ctl.ConsolePath(dir, args[0])
			if err != nil {
				return err
			}
			return tail(ctx, cmd.OutOrStdout(), p, follow)
		},
	}
	console.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output")
	logs := &cobra.Command{
		Use: "logs HOST", Short: "show a host's QEMU log, console and the bmcsim log", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := ctl.ConsolePath(dir, args[0])
			if err != nil {
				return err
			}
			for _, f := range []string{filepath.Join(filepath.Dir(p), "qemu.log"), p, filepath.Join(dir, "bmcsim.log")} {
				fmt.Fprintf(cmd.OutOrStdout(), "==> %s <==\n", f)
				if err := tail(ctx, cmd.OutOrStdout(), f, false); err != nil {
					fmt.Fprintln(cmd.OutOrStdout(), err)
				}
			}
			return nil
		},
	}
	root.AddCommand(up, down, status, link(false), link(true), console, logs)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "lab:", err)
		os.Exit(1)
	}
}

func tail(ctx context.Context, w io.Writer, path string, follow bool) error {
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
	cmd.Stdout, cmd.Stderr = w, os.Stderr
	return cmd.Run()
}

func printSummary(w io.Writer, dir string, st *ctl.State) {
	fmt.Fprintf(w, "\nready: %d host(s), accel %s\n", len(st.Hosts), st.Accel)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tBMC (IPMI LAN)\tBMC (KCS)\tVMM-I (TLS)\tNESTED VMS")
	for _, h := range st.Hosts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", h.Name, h.BMCLAN, h.BMCKCS, h.VMMI, strings.Join(h.VMs, ", "))
	}
	tw.Flush()
	fmt.Fprintf(w, "\ninventory (vmsctl reads it): %s/inventory.json\nsecrets (0600): %s/h*/bmc-admin.password, %s/h*/host.key, %s/operator.key\n", dir, dir, dir, dir)
	h := st.Hosts[0]
	fmt.Fprintf(w, `
next:
  bin/vmsctl vm list %[1]s                     # auto: VMM-I first, OOB-I if it fails
  bin/vmsctl vm start %[1]s app1 --via oob
  bin/lab unplug %[1]s vmmi && bin/vmsctl vm shutdown %[1]s web1   # carried by the BMC
  bin/lab plug %[1]s vmmi
  ipmitool -I lanplus -C 17 -H 127.0.0.1 -p %[2]s -U admin -f %[3]s/%[1]s/bmc-admin.password sel list
  bin/lab status; bin/lab console %[1]s; make lab-down
`, h.Name, strings.TrimPrefix(h.BMCLAN, "127.0.0.1:"), dir)
}
