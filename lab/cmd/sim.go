package cmd

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/ooblab/ooblab/lab/simfleet"
)

// sim is `lab sim --hosts N`: a simulated fleet without QEMU (lab/simfleet)
// that runs in the foreground until Ctrl-C, with its own inventory under
// the state folder (never the QEMU lab's inventory.json).
func (e *env) sim() *cobra.Command {
	var o simfleet.Options
	c := &cobra.Command{
		Use:   "sim",
		Short: "run N simulated hosts without QEMU (bmcsim --fleet + hvagent's code on libvirt test:///default) until Ctrl-C",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.BinDir == "" {
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				o.BinDir = filepath.Dir(exe)
			}
			o.Dir = filepath.Join(e.dir, "sim")
			if o.LANBase != 0 {
				o.KCSBase = o.LANBase + o.N
			}
			o.HostLog = e.log
			start := time.Now()
			f, err := simfleet.Start(e.ctx, o)
			if err != nil {
				return err
			}
			defer f.Stop()
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "%d simulated hosts up in %.1f s: BMCs h-0 … h-%d on 127.0.0.1:%d-%d (RMCP+, user %s), bmcsim pid %d (log %s)\n",
				f.N, time.Since(start).Seconds(), f.N-1, f.LANBase, f.LANBase+f.N-1, simfleet.User, f.BMCPid, f.BMCLog)
			fmt.Fprintf(out, "inventory: %s\ntry: vmsctl --inventory %s --via oob host status\nCtrl-C stops them.\n", f.Inventory, f.Inventory)
			<-e.ctx.Done()
			return nil
		},
	}
	c.Flags().IntVar(&o.N, "hosts", 10, "number of simulated hosts (and BMCs)")
	c.Flags().StringVar(&o.BinDir, "bin", "", "folder with bmcsim (default: beside lab)")
	c.Flags().IntVar(&o.LANBase, "base-port", 0, "first BMC LAN port, KCS ports follow the LAN range (default: free ports)")
	return c
}
