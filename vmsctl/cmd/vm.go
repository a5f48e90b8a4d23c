package cmd

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

func (a *App) vmCmd() *cobra.Command {
	vm := group(&cobra.Command{Use: "vm", Short: "List, inspect and change VMs on a host"})
	add := func(name, short string, c vmsg.Command, withVM bool) *cobra.Command {
		use, n := name+" HOST", 1
		if withVM {
			use, n = name+" HOST VM", 2
		}
		args := exactArgs(n)
		if c == vmsg.CmdList {
			use, args = name+" [HOST]", listArgs // no host: every host (fanout.go)
		}
		cc := &cobra.Command{
			Use: use, Short: short, Args: args, ValidArgsFunction: a.hostNames,
			RunE: func(cmd *cobra.Command, args []string) error {
				if len(args) == 0 {
					return a.listAll(cmd)
				}
				name := ""
				if withVM {
					name = args[1]
				}
				return a.runVM(cmd, args[0], c, name)
			},
		}
		vm.AddCommand(cc)
		return cc
	}
	a.fan.addFlags(add("list", "List a host's VMs, or every host's (--parallel at once) when none is named", vmsg.CmdList, false).Flags())
	add("status", "Show one VM", vmsg.CmdStatus, true)
	add("start", "Start a VM", vmsg.CmdStart, true)
	add("shutdown", "Ask a VM to shut down (ACPI)", vmsg.CmdShutdown, true)
	add("destroy", "Power a VM off at once", vmsg.CmdDestroy, true)
	add("reboot", "Reboot a VM", vmsg.CmdReboot, true)
	add("suspend", "Pause a VM", vmsg.CmdSuspend, true)
	add("resume", "Resume a paused VM", vmsg.CmdResume, true)
	return vm
}

func (a *App) runVM(cmd *cobra.Command, host string, c vmsg.Command, vm string) error {
	cl, err := a.client()
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	res, err := cl.Do(ctx, host, c, vm)
	var re *client.ReplyError
	if errors.As(err, &re) && re.Code == vmsg.ErrInterrupted && res != nil && res.Reply != nil {
		for _, v := range res.Reply.VMs {
			state := v.State
			if v.Reason != "" && v.Reason != v.State {
				state += " (" + v.Reason + ")" // "paused (starting up)": libvirt is still at it
			}
			fmt.Fprintf(a.Err, "vmsctl: %s: request %016x: %s was interrupted by an agent restart; %s is now %s\n", host, res.RequestID, c, v.Name, state)
		}
	}
	if err != nil {
		return err
	}
	out := vmResult{Host: host, Command: c.String(), VM: vm, OK: true, Via: res.Via, Executed: res.ExecutedVia, SentVia: res.SentVia,
		LatencyMs: ms(res.Latency), RequestID: fmt.Sprintf("%016x", res.RequestID), Challenged: res.Challenged, VMs: vmsOut(res.Reply.VMs)}
	if e := res.Reply.Executed; e != nil {
		out.Metadata, out.VMSOOBI, out.VMSVMMI = e.Metadata, e.OOBAddr, e.VMMAddr
	}
	return a.emit(out, func(w io.Writer) {
		if c == vmsg.CmdList || c == vmsg.CmdStatus {
			vmTable(w, out.VMs)
			fmt.Fprintf(w, "%s: %d VM(s), %s\n", host, len(res.Reply.VMs), viaText(res.Via, res.Latency))
			return
		}
		extra := ""
		if res.Challenged {
			extra = " (challenge answered)"
		}
		if len(res.SentVia) > 1 {
			ran := res.ExecutedVia
			if ran == "" {
				ran = "one of them"
			}
			extra += fmt.Sprintf(" (sent over %s; run once, via %s)", strings.Join(res.SentVia, " and "), ran)
		}
		fmt.Fprintf(w, "%s %s on %s: ok%s, %s\n", c, vm, host, extra, viaText(res.Via, res.Latency))
	})
}
