package cmd

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ooblab/ooblab/internal/fileio"
	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/lab/ctl"
	"github.com/ooblab/ooblab/vmsctl/client"
)

// demo is `demo [--host h1] [--vm web1] [--pause]`: the failover story,
// step by step with captions, for a presenter (the page shows it live).
func (e *env) demo() *cobra.Command {
	var host, vm string
	var pause bool
	c := &cobra.Command{
		Use:   "demo",
		Short: "walk the failover story with captions: list over the VMM-I, unplug it, the same command carried by the BMC, a change behind the agent's back raising an alert, plug back",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			inv, err := fileio.LoadInventory(filepath.Join(e.dir, "inventory.json"))
			if err != nil {
				return fmt.Errorf("no lab inventory (lab up first): %w", err)
			}
			if _, err := inv.Host(host); err != nil {
				return err
			}
			cl, err := client.New(inv, client.Options{Logger: slog.New(slog.DiscardHandler), Metadata: map[string]string{"demo": "lab demo"}})
			if err != nil {
				return err
			}
			defer cl.Close()
			d := &demoRun{ctx: e.ctx, out: cmd.OutOrStdout(), in: bufio.NewReader(cmd.InOrStdin()), pause: pause, cl: cl, host: host}
			defer func() { // never leave the cable out
				ctx, cancel := context.WithTimeout(context.WithoutCancel(e.ctx), 30*time.Second)
				defer cancel()
				_ = ctl.SetLink(ctx, e.dir, host, "vmmi", true, e.log)
			}()
			return d.run(e.dir, vm, e.log)
		},
	}
	c.Flags().StringVar(&host, "host", "h1", "the host of the story")
	c.Flags().StringVar(&vm, "vm", "web1", "the VM the story destroys and an admin starts behind the agent's back")
	c.Flags().BoolVar(&pause, "pause", false, "wait for Enter before each step")
	return c
}

type demoRun struct {
	ctx   context.Context
	out   io.Writer
	in    *bufio.Reader
	pause bool
	cl    *client.Client
	host  string
	n     int
}

// step prints a caption (and waits for Enter with --pause).
func (d *demoRun) step(caption string) {
	d.n++
	fmt.Fprintf(d.out, "\n== %d. %s\n", d.n, caption)
	if d.pause {
		fmt.Fprint(d.out, "   (Enter to go on) ")
		_, _ = d.in.ReadString('\n')
	}
}

func (d *demoRun) do(ctx context.Context, cmd vmsg.Command, vm string) (*client.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	res, err := d.cl.Do(ctx, d.host, cmd, vm)
	if err != nil {
		return res, err
	}
	fmt.Fprintf(d.out, "   %s: ok, via %s in %v (request %016x)\n", strings.TrimSpace(cmd.String()+" "+vm), res.Via, res.Latency.Round(time.Millisecond), res.RequestID)
	if res.Reply != nil {
		for _, v := range res.Reply.VMs {
			fmt.Fprintf(d.out, "     %-8s %s\n", v.Name, v.State)
		}
	}
	return res, nil
}

func (d *demoRun) run(dir, vm string, log *slog.Logger) error {
	d.step("The VMS lists " + d.host + "'s VMs over the management network (the VMM-I), as it always does")
	if _, err := d.do(d.ctx, vmsg.CmdList, ""); err != nil {
		return err
	}
	d.step("Pull " + d.host + "'s VMM-I cable (QMP set_link off on its management NIC)")
	if err := ctl.SetLink(d.ctx, dir, d.host, "vmmi", false, log); err != nil {
		return err
	}
	fmt.Fprintln(d.out, "   unplugged")
	d.step("The same command: auto mode finds the VMM-I silent and the BMC carries it (RMCP+ → queue 1 → KCS → hvagent → queue 2)")
	if _, err := d.do(d.ctx, vmsg.CmdList, ""); err != nil {
		return err
	}
	d.step("Destroy " + vm + ", still through the BMC: sealed end to end, signed, journalled once")
	if _, err := d.do(d.ctx, vmsg.CmdDestroy, vm); err != nil {
		return err
	}
	d.step("An admin inside the host starts " + vm + " behind hvagent's back (virsh start): hvagent alerts a registered user")
	// Follow the BMC's alert log from here: the BMC keeps what this
	// follower has not read, also when another follower (the lab page)
	// reads first, and older alerts for the same VM are behind us.
	actx, cancel := context.WithTimeout(d.ctx, 10*time.Second)
	_, err := d.cl.Alerts(actx, d.host)
	cancel()
	if err != nil {
		return fmt.Errorf("reading the alert log before the virsh start: %w", err)
	}
	var out strings.Builder
	if rc, err := ctl.Exec(d.ctx, dir, d.host, "virsh start "+vm, &out); err != nil || rc != 0 {
		return fmt.Errorf("virsh start %s: rc %d %v: %s", vm, rc, err, out.String())
	}
	fmt.Fprintf(d.out, "   host: %s\n", strings.TrimSpace(out.String()))
	err = waitUntil(d.ctx, time.Minute, 500*time.Millisecond, "no alert for "+vm, func(ctx context.Context) (bool, error) {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		als, err := d.cl.Alerts(ctx, d.host)
		found := false
		for _, a := range als {
			if a.VM == vm {
				fmt.Fprintf(d.out, "   alert: %s\n", a.Reason)
				found = true
			}
		}
		return found, err
	})
	if err != nil {
		return err
	}
	d.step("Plug the cable back: the VMM-I answers again")
	if err := ctl.SetLink(d.ctx, dir, d.host, "vmmi", true, log); err != nil {
		return err
	}
	err = waitUntil(d.ctx, time.Minute, time.Second, "the VMM-I did not answer again", func(ctx context.Context) (bool, error) {
		res, err := d.do(ctx, vmsg.CmdPing, "")
		return err == nil && res.Via == client.ViaVMMI, err
	})
	if err != nil {
		return err
	}
	fmt.Fprintln(d.out, "\nThe end: the VMS kept control of the VMs with its management network cut, and a change made behind the agent's back did not go unseen.")
	return nil
}

// waitUntil calls cond every interval until it holds. It returns ctx's
// error when ctx ends first, and "FAILURE within 1m0s (last: cond's last
// error)" when within passes first. cond gets a context that ends at that
// deadline, so no call runs past it.
func waitUntil(ctx context.Context, within, interval time.Duration, failure string, cond func(context.Context) (bool, error)) error {
	wctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		ok, err := cond(wctx)
		if ok {
			return nil
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				return fmt.Errorf("%s within %v (last: %w)", failure, within, err)
			}
			return fmt.Errorf("%s within %v", failure, within)
		case <-t.C:
		}
	}
}
