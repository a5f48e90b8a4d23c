package cmd

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

func (a *App) hostCmd() *cobra.Command {
	h := group(&cobra.Command{Use: "host", Short: "The inventory's hosts"})
	a.fan.addFlags(h.PersistentFlags())
	h.AddCommand(&cobra.Command{
		Use: "list", Short: "List the inventory's hosts (no network)", Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.loadInventory(); err != nil {
				return err
			}
			var rows []hostRow
			for _, h := range a.inv.Hosts {
				rows = append(rows, hostRow{Name: h.Name, HostID: h.HostID, VMMI: h.VMMI.Addr, BMC: h.BMC.Addr})
			}
			return a.emit(rows, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tHOST ID\tVMM-I\tBMC")
				for _, r := range rows {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Name, r.HostID, r.VMMI, r.BMC)
				}
				tw.Flush()
			})
		},
	})
	h.AddCommand(&cobra.Command{
		Use: "status [HOST...]", Short: "Ping hvagent on each host and show which channel answered",
		ValidArgsFunction: a.hostNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.surveyEmit(cmd, args, vmsg.CmdPing, func(w io.Writer, rows []hostRow) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "HOST\tSTATUS\tCHANNEL\tCLOCK\tHOSTNAME\tHYPERVISOR")
				for _, r := range rows {
					if r.err != nil {
						fmt.Fprintf(tw, "%s\t%s\t-\t%s\t-\t-\n", r.Name, r.Error, clockText(r.ClockOffsetMs))
						continue
					}
					hn, hv := "-", "-"
					if r.Info != nil {
						hn, hv = r.Info.Hostname, strings.TrimSpace(r.Info.Hypervisor+" "+r.Info.Libvirt)
					}
					fmt.Fprintf(tw, "%s\tup\t%s\t%s\t%s\t%s\n", r.Name, viaText(r.Via, time.Duration(r.LatencyMs*float64(time.Millisecond))), clockText(r.ClockOffsetMs), hn, hv)
				}
				tw.Flush()
			})
		},
	})
	h.AddCommand(a.hostPowerCmd(), a.hostSELCmd(), a.hostSensorsCmd(), a.hostConsoleCmd())
	return h
}

// surveyEmit is a command over several hosts (host status, vm list with no
// host): it runs c on every named host (all when none) with a client of its
// own, prints the rows (-o json/yaml) or table(w, rows), and fails with the
// worst host's error when not every host answered.
func (a *App) surveyEmit(cmd *cobra.Command, names []string, c vmsg.Command, table func(w io.Writer, rows []hostRow)) error {
	cl, err := a.client()
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	rows, err := a.survey(ctx, cl, names, c)
	if err != nil {
		return err
	}
	if err := a.emit(rows, func(w io.Writer) { table(w, rows) }); err != nil {
		return err
	}
	return worst(rows)
}

// survey runs cmd on every named host (all when none), --parallel at once.
func (a *App) survey(ctx context.Context, cl *client.Client, names []string, c vmsg.Command) ([]hostRow, error) {
	if len(names) == 0 {
		for _, h := range a.inv.Hosts {
			names = append(names, h.Name)
		}
	}
	rows := make([]hostRow, len(names))
	for i, n := range names {
		h, err := a.inv.Host(n)
		if err != nil {
			return nil, err
		}
		rows[i] = hostRow{Name: n, HostID: h.HostID}
	}
	a.fan.run(ctx, a.Err, len(names), c.String(), func(ctx context.Context, i int) {
		r := &rows[i]
		res, err := cl.Do(ctx, r.Name, c, "")
		ok := err == nil
		r.OK = &ok
		if res != nil && res.ClockOffset != nil { // also with a clock skew refusal
			off := ms(*res.ClockOffset)
			r.ClockOffsetMs = &off
		}
		if err != nil {
			r.err, r.Error = err, err.Error()
		} else {
			r.Via, r.LatencyMs, r.Info, r.VMs = res.Via, ms(res.Latency), hostInfo(res.Reply.Host), vmsOut(res.Reply.VMs)
		}
		if a.via == "auto" {
			r.Health = health(cl.Health(r.Name))
		}
	})
	return rows, nil
}

// clockText is a host's clock offset as host status shows it: "+312s"
// (the host ahead), "-0.4s", or "-" when unknown.
func clockText(offMs *float64) string {
	if offMs == nil {
		return "-"
	}
	if a := *offMs; a >= 10000 || a <= -10000 {
		return fmt.Sprintf("%+.0fs", a/1000)
	}
	return fmt.Sprintf("%+.1fs", *offMs/1000)
}

// worst returns the error with the most specific exit code among rows.
func worst(rows []hostRow) error {
	var e error
	for _, r := range rows {
		if r.err != nil && (e == nil || ExitCode(r.err) > ExitCode(e)) {
			e = r.err
		}
	}
	if e != nil {
		return fmt.Errorf("not every host answered: %w", e)
	}
	return nil
}
