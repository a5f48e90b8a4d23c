package cmd

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

func (a *App) watchCmd() *cobra.Command {
	var every time.Duration
	var once bool
	c := &cobra.Command{
		Use:   "watch [HOST...]",
		Short: "Live view: hosts, channel health, VM states, recent alerts",
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := a.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			var recent []alertRow
			for {
				ctx, cancel := context.WithTimeout(cmd.Context(), max(every, time.Second))
				rows, err := a.survey(ctx, cl, args, vmsg.CmdList)
				if err != nil {
					cancel()
					return err
				}
				for _, r := range rows {
					al, _ := cl.Alerts(ctx, r.Name)
					for _, x := range al {
						recent = append(recent, alertOut(r.Name, x))
					}
				}
				cancel()
				if len(recent) > 10 {
					recent = recent[len(recent)-10:]
				}
				if a.output != "table" {
					if err := a.emit(struct {
						Time   time.Time  `json:"time"`
						Hosts  []hostRow  `json:"hosts"`
						Alerts []alertRow `json:"alerts"`
					}{a.Now().UTC(), rows, recent}, nil); err != nil {
						return err
					}
				} else {
					a.drawWatch(rows, recent, !once)
				}
				if once {
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
	c.Flags().DurationVar(&every, "interval", 2*time.Second, "refresh interval")
	c.Flags().BoolVar(&once, "once", false, "draw one frame and exit (no screen clearing)")
	return c
}

const (
	ansiClear = "\x1b[H\x1b[2J"
	ansiBold  = "\x1b[1m"
	ansiRed   = "\x1b[31m"
	ansiGreen = "\x1b[32m"
	ansiYel   = "\x1b[33m"
	ansiReset = "\x1b[0m"
)

func (a *App) drawWatch(rows []hostRow, alerts []alertRow, clear bool) {
	var b strings.Builder
	if clear {
		b.WriteString(ansiClear)
	}
	fmt.Fprintf(&b, "%svmsctl watch%s  %s  via=%s\n\n", ansiBold, ansiReset, a.Now().Format(time.TimeOnly), a.via)
	for _, r := range rows {
		status := ansiGreen + "up" + ansiReset
		if r.err != nil {
			status = ansiRed + "DOWN" + ansiReset
		}
		ch := "-"
		if r.Via != "" {
			ch = viaText(r.Via, time.Duration(r.LatencyMs*float64(time.Millisecond)))
			if strings.HasPrefix(r.Via, client.ViaOOB) {
				ch = ansiYel + ch + ansiReset
			}
		}
		vh := ""
		if r.Health != nil && r.Health.Seen {
			if r.Health.Healthy {
				vh = "vmm-i " + ansiGreen + "ok" + ansiReset
			} else {
				vh = fmt.Sprintf("vmm-i %sdown%s (retry in %s)", ansiRed, ansiReset, time.Until(r.Health.SkipUntil).Round(time.Second))
			}
		}
		fmt.Fprintf(&b, "%s%-12s%s %s  %s  %s\n", ansiBold, r.Name, ansiReset, status, ch, vh)
		if r.err != nil {
			fmt.Fprintf(&b, "    %s\n", r.Error)
		}
		vms := append([]vmOut(nil), r.VMs...)
		sort.Slice(vms, func(i, j int) bool { return vms[i].Name < vms[j].Name })
		for _, v := range vms {
			col := ansiYel
			if v.State == "running" {
				col = ansiGreen
			}
			fmt.Fprintf(&b, "    %-20s %s%s%s\n", v.Name, col, v.State, ansiReset)
		}
	}
	b.WriteString("\nrecent alerts:\n")
	if len(alerts) == 0 {
		b.WriteString("    (none)\n")
	}
	for _, al := range alerts {
		fmt.Fprintf(&b, "    %s %s %s %s %s: %s\n", al.Time.Local().Format(time.TimeOnly), al.Host, al.Principal, al.Action, al.VM, al.Reason)
	}
	io.WriteString(a.Out, b.String())
}
