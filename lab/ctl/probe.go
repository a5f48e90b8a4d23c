package ctl

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/ooblab/ooblab/internal/fileio"
	"github.com/ooblab/ooblab/internal/inventory"
	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

// ProbeBoth pings a host's agent over the VMM-I and over the OOB-I, at once.
func ProbeBoth(ctx context.Context, inv *inventory.Inventory, host string) (vmmi, oob time.Duration, err error) {
	type result struct {
		d   time.Duration
		err error
	}
	ping := func(via string, out chan<- result) {
		c, err := client.New(inv, client.Options{Via: via, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			out <- result{err: err}
			return
		}
		defer c.Close()
		res, err := c.Do(ctx, host, vmsg.CmdPing, "")
		if err != nil {
			out <- result{err: fmt.Errorf("%s: %w", via, err)}
			return
		}
		out <- result{d: res.Latency}
	}
	vc, oc := make(chan result, 1), make(chan result, 1)
	go ping(client.ViaVMMI, vc)
	go ping(client.ViaOOB, oc)
	v, o := <-vc, <-oc
	if v.err != nil {
		return 0, 0, v.err
	}
	if o.err != nil {
		return 0, 0, o.err
	}
	return v.d, o.d, nil
}

// ProbeStatus is Status's probe: each channel's state and the VMs.
func ProbeStatus(dir string) func(ctx context.Context, host string) (string, string, []string) {
	return func(ctx context.Context, host string) (string, string, []string) {
		inv, err := fileio.LoadInventory(dir + "/inventory.json")
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
