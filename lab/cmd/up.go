package cmd

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ooblab/ooblab/lab/ctl"
)

func (e *env) up() *cobra.Command {
	var o ctl.Options
	var noProbe, sim bool
	c := &cobra.Command{
		Use:   "up",
		Short: "start the BMCs and hypervisor hosts; return when every agent answers on both channels",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if sim { // no QEMU: bmcsim --fleet and simulated hosts (sim.go)
				base := 0
				if cmd.Flags().Changed("base-port") {
					base = o.BasePort
				}
				return e.simUp(cmd, o.Hosts, base, o.BinDir)
			}
			o.Dir = e.dir
			o.Out = cmd.OutOrStdout()
			if !noProbe {
				o.Probe = ctl.ProbeBoth
			}
			ilog := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
			st, err := ctl.Up(e.ctx, o, ilog)
			if err != nil {
				return err
			}
			printSummary(cmd.OutOrStdout(), e.dir, st)
			return nil
		},
	}
	c.Flags().IntVar(&o.Hosts, "hosts", 1, "number of hypervisor hosts")
	c.Flags().StringVar(&o.Accel, "accel", "", "kvm or tcg (default: probe KVM, fall back to TCG)")
	c.Flags().BoolVar(&o.Force, "rebuild", false, "rebuild the guest image even if cached")
	c.Flags().StringVar(&o.BinDir, "bin", "", "folder with bmcsim and hvagent (default: beside lab)")
	c.Flags().IntVar(&o.BasePort, "base-port", 6230, "first BMC LAN port; KCS +100, serial (SOL) +200, VMM-I +2000, metrics +3000")
	c.Flags().BoolVar(&noProbe, "no-probe", false, "ready when the agent starts, without asking it over both channels")
	c.Flags().BoolVar(&sim, "sim", false, "simulated hosts without QEMU (bmcsim --fleet + hvagent's code on libvirt test:///default; inventory in DIR/sim), stopped by lab down")
	return c
}

func (e *env) down() *cobra.Command {
	return &cobra.Command{
		Use: "down", Short: "stop everything the lab started", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			simUp, serr := e.simDown(cmd.OutOrStdout()) // a `lab up --sim` fleet (sim.go)
			if serr != nil {
				return serr
			}
			err := ctl.Down(e.ctx, e.dir, cmd.OutOrStdout(), e.log)
			if err == ctl.ErrNotUp {
				if !simUp {
					fmt.Fprintln(cmd.OutOrStdout(), "no lab is up")
				}
				return nil
			}
			return err
		},
	}
}

func printSummary(w io.Writer, dir string, st *ctl.State) {
	fmt.Fprintf(w, "\nready: %d host(s), accel %s\n", len(st.Hosts), st.Accel)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tBMC (IPMI LAN)\tBMC (REDFISH)\tBMC (KCS)\tVMM-I (TLS)\tNESTED VMS")
	for _, h := range st.Hosts {
		rf := "-"
		if h.BMCRedfish != "" {
			rf = "https://" + h.BMCRedfish
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", h.Name, h.BMCLAN, rf, h.BMCKCS, h.VMMI, strings.Join(h.VMs, ", "))
	}
	tw.Flush()
	if st.UIURL != "" {
		fmt.Fprintf(w, "\nweb page (the token is in the URL): %s\n", st.UIURL)
	}
	fmt.Fprintf(w, "\ninventory (vmsctl reads it): %s/inventory.json\nsecrets (0600): %s/h*/bmc-vms.password (OOB-I, operator), %s/h*/bmc-admin.password (SOL, admin), %s/h*/host.key, %s/operator.key\n", dir, dir, dir, dir, dir)
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
