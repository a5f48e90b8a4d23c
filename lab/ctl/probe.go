package ctl

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/ooblab/ooblab/internal/inventory"
	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

// ProbeBoth pings a host's agent over the VMM-I and then over the OOB-I.
func ProbeBoth(ctx context.Context, inv *inventory.Inventory, host string) (vmmi, oob time.Duration, err error) {
	for _, via := range []string{client.ViaVMMI, client.ViaOOB} {
		c, err := client.New(inv, client.Options{Via: via, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			return 0, 0, err
		}
		res, err := c.Do(ctx, host, vmsg.CmdPing, "")
		c.Close()
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w", via, err)
		}
		if via == client.ViaVMMI {
			vmmi = res.Latency
		} else {
			oob = res.Latency
		}
	}
	return vmmi, oob, nil
}

// ProbeStatus is Status's probe: each channel's state and the VMs.
func ProbeStatus(dir string) func(ctx context.Context, host string) (string, string, []string) {
	return func(ctx context.Context, host string) (string, string, []string) {
		inv, err := inventory.Load(dir + "/inventory.json")
		if err != nil {
			return "no inventory", "no inventory", nil
		}
		var vms []string
		state := func(via string) string {
			c, err := client.New(inv, client.Options{Via: via, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				return err.Error()
			}
			defer c.Close()
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			res, err := c.Do(pctx, host, vmsg.CmdList, "")
			if err != nil {
				return "down"
			}
			if vms == nil && res.Reply != nil {
				for _, v := range res.Reply.VMs {
					vms = append(vms, fmt.Sprintf("%s (%s)", v.Name, v.State))
				}
			}
			return fmt.Sprintf("up (%v)", res.Latency.Round(time.Millisecond))
		}
		return state(client.ViaVMMI), state(client.ViaOOB), vms
	}
}
