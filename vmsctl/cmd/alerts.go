package cmd

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ooblab/ooblab/internal/inventory"
)

func (a *App) alertsCmd() *cobra.Command {
	var follow bool
	var every time.Duration
	c := &cobra.Command{
		Use: "alerts [HOST...]", Short: "Show alerts hvagent sent (refused requests), from queue 2 and the VMM-I stream",
		ValidArgsFunction: a.hostNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := a.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			if err := a.loadInventory(); err != nil {
				return err
			}
			names := args
			if len(names) == 0 {
				for _, h := range a.inv.Hosts {
					names = append(names, h.Name)
				}
			}
			for {
				ctx, cancel := a.ctx(cmd)
				var rows []alertRow
				for _, n := range names {
					al, err := cl.Alerts(ctx, n)
					if err != nil {
						if errors.Is(err, inventory.ErrNoHost) {
							cancel()
							return err
						}
						fmt.Fprintf(a.Err, "vmsctl: alerts from %s: %v\n", n, err)
					}
					for _, x := range al {
						rows = append(rows, alertOut(n, x))
					}
				}
				cancel()
				if len(rows) > 0 || !follow {
					if err := a.emit(rows, func(w io.Writer) { alertTable(w, rows) }); err != nil {
						return err
					}
				}
				if !follow {
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(every):
				}
			}
		},
	}
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep polling and print alerts as they arrive")
	c.Flags().DurationVar(&every, "interval", time.Second, "with --follow: poll interval")
	c.Flags().Uint32Var(&a.followerID, "follower-id", 0, "read the BMC's alert log as this durable follower (1-4294967295): the BMC keeps its cursor, and the alerts it has not read, while it does not read for up to its follower TTL (bmcsim --follower-ttl, 24 h), so a later run with the same id resumes where the last one stopped; 0: a new follower each run, which the BMC forgets a minute after its last read")
	return c
}

func alertTable(w io.Writer, rows []alertRow) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tHOST\tPRINCIPAL\tACTION\tVM\tREASON")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Time.Local().Format(time.DateTime), r.Host, r.Principal, r.Action, r.VM, r.Reason)
	}
	tw.Flush()
}
