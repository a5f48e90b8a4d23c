package cmd

import (
	"context"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mdp/qrterminal/v3"
	"github.com/pquerna/otp/totp"
	"github.com/spf13/cobra"

	"github.com/ooblab/ooblab/internal/inventory"
	"github.com/ooblab/ooblab/internal/seal"
	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

// hostNames completes HOST arguments from the inventory.
func (a *App) hostNames(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 || a.loadInventory() != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var names []string
	for _, h := range a.inv.Hosts {
		names = append(names, h.Name)
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

// group makes a command that only holds subcommands fail with a usage
// error (exit 2) when called bare or with an unknown subcommand.
func group(c *cobra.Command) *cobra.Command {
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usagef("unknown command %q for %q", args[0], cmd.CommandPath())
		}
		cmd.Help()
		return usagef("%s needs a subcommand", cmd.CommandPath())
	}
	return c
}

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
			fmt.Fprintf(a.Err, "vmsctl: %s on %s was interrupted by an agent restart; %s is now %s\n", c, host, v.Name, v.State)
		}
	}
	if err != nil {
		return err
	}
	out := vmResult{Host: host, Command: c.String(), VM: vm, OK: true, Via: res.Via, Executed: res.ExecutedVia, SentVia: res.SentVia,
		LatencyMs: ms(res.Latency), RequestID: fmt.Sprintf("%016x", res.RequestID), Challenged: res.Challenged, VMs: vmsOut(res.Reply.VMs)}
	if e := res.Reply.Executed; e != nil {
		out.Metadata = e.Metadata
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
			cl, err := a.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			rows, err := a.survey(ctx, cl, args, vmsg.CmdPing)
			if err != nil {
				return err
			}
			err = a.emit(rows, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "HOST\tSTATUS\tCHANNEL\tHOSTNAME\tHYPERVISOR")
				for _, r := range rows {
					if r.err != nil {
						fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\n", r.Name, r.Error)
						continue
					}
					hn, hv := "-", "-"
					if r.Info != nil {
						hn, hv = r.Info.Hostname, strings.TrimSpace(r.Info.Hypervisor+" "+r.Info.Libvirt)
					}
					fmt.Fprintf(tw, "%s\tup\t%s\t%s\t%s\n", r.Name, viaText(r.Via, time.Duration(r.LatencyMs*float64(time.Millisecond))), hn, hv)
				}
				tw.Flush()
			})
			if err != nil {
				return err
			}
			return worst(rows)
		},
	})
	h.AddCommand(a.hostPowerCmd(), a.hostSELCmd())
	return h
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

// writeKey writes an otpauth URI to path with mode 0600, refusing to replace
// an existing key unless force.
func writeKey(path string, k *seal.Key, force bool) error {
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return usagef("%s exists: give --force to replace the key (the other side must then be re-enrolled)", path)
		}
		return err
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.WriteString(k.URI() + "\n"); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

type enrollResult struct {
	Name    string `json:"name"`
	KeyFile string `json:"key_file"`
	URI     string `json:"otpauth_uri"`
	QR      string `json:"qr_png,omitempty"`
	// Principal is the signing key of the principal that speaks to this
	// host (enroll) or of the operator (user enroll), created if missing.
	Principal *principalResult `json:"principal,omitempty"`
}

// enrollOut writes the QR PNG (when qr is set) and prints the result; with
// phone it also draws the QR code on the terminal, for an authenticator
// app to scan.
func (a *App) enrollOut(r enrollResult, k *seal.Key, qr string, phone bool) error {
	if qr != "" {
		png, err := k.PNG(320)
		if err != nil {
			return err
		}
		if err := os.WriteFile(qr, png, 0o600); err != nil {
			return err
		}
		r.QR = qr
	}
	return a.emit(r, func(w io.Writer) {
		if phone {
			fmt.Fprintln(w, "Scan this with the operator's authenticator app (any RFC 6238 app: Google Authenticator, Aegis, FreeOTP, 1Password…):")
			qrterminal.GenerateWithConfig(r.URI, qrterminal.Config{Level: qrterminal.L, Writer: w, HalfBlocks: true,
				BlackChar: qrterminal.BLACK_BLACK, WhiteBlackChar: qrterminal.WHITE_BLACK, WhiteChar: qrterminal.WHITE_WHITE,
				BlackWhiteChar: qrterminal.BLACK_WHITE, QuietZone: 2})
		}
		fmt.Fprintf(w, "%s\nkey written to %s (0600)", r.URI, r.KeyFile)
		if r.QR != "" {
			fmt.Fprintf(w, "; QR code in %s", r.QR)
		}
		fmt.Fprintln(w)
		if r.Principal != nil {
			r.Principal.table(w)
		}
	})
}

func (a *App) enrollCmd() *cobra.Command {
	var qr string
	var force bool
	c := &cobra.Command{
		Use:   "enroll HOST",
		Short: "Create the host's sealing key (TOTP secret), write it 0600 and record it in the inventory",
		Long: `enroll creates a new per-host secret as an RFC 6238 TOTP key, prints its otpauth://
URI (give the same key to the host's hvagent), optionally writes it as a QR code,
writes the key file with mode 0600 (the host's secret_file, or HOST.key beside the
inventory) and updates the inventory.`,
		Args: exactArgs(1), ValidArgsFunction: a.hostNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.loadInventory(); err != nil {
				return err
			}
			h, err := a.inv.Host(args[0])
			if err != nil {
				return err
			}
			k, err := seal.Enroll(h.HostID)
			if err != nil {
				return err
			}
			if h.SecretFile == "" {
				h.SecretFile = h.Name + ".key"
			}
			path := a.inv.Path(h.SecretFile)
			if err := writeKey(path, k, force); err != nil {
				return err
			}
			if err := a.inv.Save(a.invFile); err != nil {
				return fmt.Errorf("key written to %s but the inventory was not updated: %w", path, err)
			}
			r := enrollResult{Name: h.Name, KeyFile: path, URI: k.URI()}
			if a.inv.Principal != "" {
				pr, err := a.enrollPrincipal(a.inv.Principal, enrollPrincipalOpts{onlyIfMissing: true})
				if err != nil {
					return err
				}
				r.Principal = &pr
			}
			return a.enrollOut(r, k, qr, false)
		},
	}
	c.Flags().StringVar(&qr, "qr", "", "also write the URI as a QR code PNG to this file")
	c.Flags().BoolVar(&force, "force", false, "replace an existing key")
	return c
}

func (a *App) userCmd() *cobra.Command {
	u := group(&cobra.Command{Use: "user", Short: "Operators who answer challenges"})
	var qr string
	var force bool
	enroll := &cobra.Command{
		Use:   "enroll NAME",
		Short: "Create an operator's own TOTP key for challenges, show it as a QR code for an authenticator app, and record the operator in the inventory",
		Long: `user enroll creates the operator's RFC 6238 TOTP key, prints its otpauth:// URI,
draws it as a QR code on the terminal and writes it as a PNG: scan either with any
authenticator app on the operator's phone. Challenges are then answered with the
app's 6-digit code (--otp CODE, or at the prompt). Register the same key for the
operator in hvagent's authorization list ([users.NAME] totp_secret_file). The key
file (0600) is for 'vmsctl user code' and the automation mode --otp-secret-file;
keep it off the VMS otherwise.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.loadInventory(); err != nil {
				return err
			}
			name := args[0]
			k, err := seal.Enroll(name)
			if err != nil {
				return usageError{err}
			}
			var op *inventory.Operator
			for i := range a.inv.Operators {
				if a.inv.Operators[i].Name == name {
					op = &a.inv.Operators[i]
				}
			}
			if op == nil {
				a.inv.Operators = append(a.inv.Operators, inventory.Operator{Name: name})
				op = &a.inv.Operators[len(a.inv.Operators)-1]
			}
			if op.SecretFile == "" {
				op.SecretFile = "operator-" + name + ".key"
			}
			path := a.inv.Path(op.SecretFile)
			if err := writeKey(path, k, force); err != nil {
				return err
			}
			if err := a.inv.Save(a.invFile); err != nil {
				return fmt.Errorf("key written to %s but the inventory was not updated: %w", path, err)
			}
			if qr == "" {
				qr = strings.TrimSuffix(path, ".key") + ".png"
			}
			// The operator's own signing key, for requests sent as NAME.
			pr, err := a.enrollPrincipal(name, enrollPrincipalOpts{onlyIfMissing: true})
			if err != nil {
				return err
			}
			return a.enrollOut(enrollResult{Name: name, KeyFile: path, URI: k.URI(), Principal: &pr}, k, qr, true)
		},
	}
	enroll.Flags().StringVar(&qr, "qr", "", "where to write the URI as a QR code PNG (default: beside the key, NAME's key file with .png)")
	enroll.Flags().BoolVar(&force, "force", false, "replace an existing key")
	code := &cobra.Command{
		Use:   "code NAME [NONCE]",
		Short: "Print NAME's authenticator-app code now, or the automation code for a challenge nonce (hex)",
		Long: `code prints, from the operator's key, what the operator's authenticator app shows
now (RFC 6238, 6 digits, 30 s): the answer to give with --otp or at the prompt. With
NONCE it prints the automation code bound to that challenge nonce instead (HMAC-SHA1
of the time step followed by the nonce; what --otp-secret-file computes). Run it where
the operator's key lives; the key is NAME's secret_file in the inventory, or
--otp-secret-file.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var nonce []byte
			if len(args) == 2 {
				var err error
				if nonce, err = hex.DecodeString(args[1]); err != nil {
					return usagef("nonce %q: %v", args[1], err)
				}
			}
			file := a.otpFile
			if file == "" {
				if err := a.loadInventory(); err != nil {
					return err
				}
				for _, op := range a.inv.Operators {
					if op.Name == args[0] {
						file = a.inv.Path(op.SecretFile)
					}
				}
				if file == "" {
					return usagef("no operator %q in the inventory", args[0])
				}
			}
			secret, err := readUserSecret(file)
			if err != nil {
				return err
			}
			if nonce == nil {
				c, err := totp.GenerateCode(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(secret), a.Now())
				if err != nil {
					return err
				}
				fmt.Fprintln(a.Out, c)
				return nil
			}
			fmt.Fprintln(a.Out, seal.ChallengeCode(secret, nonce, a.Now()))
			return nil
		},
	}
	u.AddCommand(enroll, code)
	return u
}

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
			if r.Via == client.ViaOOB {
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
