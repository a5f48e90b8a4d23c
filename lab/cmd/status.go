package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ooblab/ooblab/lab/ctl"
)

func (e *env) status() *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use: "status", Short: "show hosts, BMCs, both channels and the nested VMs", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, rows, err := ctl.Status(e.ctx, e.dir, e.log, ctl.ProbeStatus(e.dir))
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
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
	c.Flags().BoolVar(&asJSON, "json", false, "JSON output")
	return c
}

// link is `unplug HOST vmmi` (up false) or `plug HOST vmmi` (up true).
func (e *env) link(up bool) *cobra.Command {
	use, short := "unplug HOST vmmi", "cut a host's VMM-I link (QMP set_link off)"
	if up {
		use, short = "plug HOST vmmi", "restore a host's VMM-I link"
	}
	return &cobra.Command{
		Use: use, Short: short, Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
			defer cancel()
			if err := ctl.SetLink(ctx, e.dir, args[0], args[1], up, e.log); err != nil {
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
