// Package cmd is the vmsctl command line: cobra commands over
// vmsctl/client. main.go only wires signals and calls Run.
package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/ooblab/ooblab/internal/fileio"
	"github.com/ooblab/ooblab/internal/inventory"
	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

// Exit codes scripts can rely on.
const (
	ExitOK          = 0 // success
	ExitError       = 1 // any other error
	ExitUsage       = 2 // bad flags or arguments, unknown host, no inventory
	ExitRefused     = 3 // the agent's authorization list or the BMC refused us
	ExitChallenge   = 4 // a protected VM's challenge could not be answered or was refused
	ExitUnreachable = 5 // no channel reached the host
	ExitNoVM        = 6 // the host has no such VM
	// ExitUnknown: the host has the request, or may have, and its outcome
	// is not known: delivered with no answer before --timeout, still
	// running at the deadline, or interrupted by an agent restart (the
	// VM's state now is printed). The error names the request id: look the
	// outcome up with vmsctl result HOST REQUEST-ID before running the
	// command again.
	ExitUnknown = 7
	// ExitInterrupted is ExitUnknown's older name.
	ExitInterrupted = ExitUnknown
	// ExitClockSkew: the host's and this VMS's clocks are too far apart
	// for the host to serve requests (not run); the offset is shown.
	ExitClockSkew = 8
)

// usageError marks errors of the command line itself.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// ExitCode maps an error to the exit code.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ue usageError
	var re *client.ReplyError
	switch {
	case errors.As(err, &ue), errors.Is(err, inventory.ErrNoHost):
		return ExitUsage
	case errors.As(err, &re):
		switch re.Code {
		case vmsg.ErrDenied:
			return ExitRefused
		case vmsg.ErrChallengeNo, vmsg.ErrChallenge:
			return ExitChallenge
		case vmsg.ErrNoSuchVM:
			return ExitNoVM
		case vmsg.ErrInterrupted:
			return ExitUnknown
		case vmsg.ErrClockSkew:
			return ExitClockSkew
		}
		return ExitError
	case errors.Is(err, client.ErrOutcomeUnknown):
		return ExitUnknown
	case errors.Is(err, client.ErrChallengeFailed):
		return ExitChallenge
	case errors.Is(err, client.ErrUnauthorized):
		return ExitRefused
	case errors.Is(err, client.ErrUnreachable):
		return ExitUnreachable
	}
	s := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "accepts ", "requires ", "invalid argument"} {
		if strings.HasPrefix(s, p) {
			return ExitUsage
		}
	}
	return ExitError
}

// App is one run of vmsctl with its streams; tests build one with fakes.
type App struct {
	In       io.Reader
	Out, Err io.Writer
	// Getenv reads the environment (default os.Getenv).
	Getenv func(string) string
	// Terminal reports whether In is an interactive terminal.
	Terminal func() bool
	// Options, when set, adjusts the client options (tests inject fake
	// channels here).
	Options func(*client.Options)
	Now     func() time.Time

	// flags
	invPath, via, output, otpFile  string
	codeFile, approvalKey, otpArgv string
	principal                      string
	timeout, budget                time.Duration
	oobSessions, oobWindow         int
	oobTransport                   string
	followerID                     uint32 // alerts --follower-id: the OOB-I requester id (0: random)
	debug                          bool
	meta                           []string
	fan                            fanOut // --parallel, --progress (fanout.go)

	inv     *inventory.Inventory
	invFile string
	log     *slog.Logger
}

// Run runs vmsctl with args (without the program name) and returns the exit code.
func Run(ctx context.Context, args []string) int {
	a := &App{In: os.Stdin, Out: os.Stdout, Err: os.Stderr}
	return a.Run(ctx, args)
}

// Run executes args and returns the exit code.
func (a *App) Run(ctx context.Context, args []string) int {
	if a.Getenv == nil {
		a.Getenv = os.Getenv
	}
	if a.Now == nil {
		a.Now = time.Now
	}
	if a.Terminal == nil {
		a.Terminal = func() bool {
			f, ok := a.In.(*os.File)
			if !ok {
				return false
			}
			st, err := f.Stat()
			return err == nil && st.Mode()&os.ModeCharDevice != 0
		}
	}
	root := a.root()
	root.SetArgs(args)
	root.SetIn(a.In)
	root.SetOut(a.Out)
	root.SetErr(a.Err)
	err := root.ExecuteContext(ctx)
	if err != nil {
		fmt.Fprintf(a.Err, "vmsctl: %v\n", err)
	}
	return ExitCode(err)
}

func (a *App) root() *cobra.Command {
	root := &cobra.Command{
		Use:   "vmsctl",
		Short: "Drive VMs on hypervisor hosts over the VMM-I or, through the BMC, the OOB-I",
		Long: `vmsctl is the VMS side of ooblab. It sends sealed requests to hvagent on each
host of the inventory, over the host's management network (VMM-I) or through the
host's BMC (OOB-I, IPMI over LAN), and answers challenges for protected VMs.

Exit codes: 0 ok, 1 error, 2 usage, 3 refused/unauthorized, 4 challenge failed,
5 host unreachable (the request was delivered on no channel), 6 no such VM,
7 outcome unknown (delivered, or maybe, and no final answer: still running,
answer lost, or the agent restarted mid-action; look it up with
vmsctl result HOST REQUEST-ID before running the command again), 8 clock skew
(the host's and this VMS's clocks are too far apart: not run, the offset is shown).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			lvl := slog.LevelWarn
			if a.debug {
				lvl = slog.LevelDebug
			}
			a.log = slog.New(slog.NewTextHandler(a.Err, &slog.HandlerOptions{Level: lvl}))
			switch a.output {
			case "table", "json", "yaml":
			default:
				return usagef("-o %q: want table, json or yaml", a.output)
			}
			switch a.via {
			case "auto", "vmmi", "oob":
			default:
				return usagef("--via %q: want auto, vmmi or oob", a.via)
			}
			if cmd.Flags().Changed("otp") {
				return usagef("--otp CODE would show the code in the process list: set VMSCTL_OTP, give --otp-file FILE, or answer the prompt")
			}
			if a.timeout <= 0 {
				return usagef("--timeout %v: want a positive duration (e.g. 30s)", a.timeout)
			}
			if a.oobWindow < 1 || a.oobWindow > maxOOBWindow {
				return usagef("--oob-window %d: want 1 to %d", a.oobWindow, maxOOBWindow)
			}
			if a.oobSessions < 1 || a.oobSessions > a.oobWindow {
				return usagef("--oob-sessions %d: want 1 to --oob-window (%d)", a.oobSessions, a.oobWindow)
			}
			if a.oobTransport != client.TransportIPMI && a.oobTransport != client.TransportRedfish {
				return usagef("--oob-transport %q: want ipmi or redfish", a.oobTransport)
			}
			return nil
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	f := root.PersistentFlags()
	f.StringVar(&a.invPath, "inventory", "", "inventory file (default: $OOBLAB_INVENTORY, else .lab/inventory.json in the current or a parent folder, else ~/.local/state/ooblab/lab/inventory.json)")
	f.StringVar(&a.via, "via", "auto", "channel: auto (VMM-I, then OOB-I), vmmi or oob")
	f.StringVarP(&a.output, "output", "o", "table", "output format: table, json or yaml")
	f.StringVar(&a.codeFile, "otp-file", "", "challenge answer from a file (mode 0600): the operator's app code or an approval token; also $VMSCTL_OTP, else the prompt")
	f.StringVar(&a.otpFile, "otp-secret-file", "", "automation mode: the operator's TOTP key file (otpauth:// URI or base32); vmsctl answers challenges itself")
	f.StringVar(&a.approvalKey, "approval-key", "", "approval mode: the operator's Ed25519 key file; vmsctl signs each challenge's approval itself (see 'vmsctl approve')")
	// --otp CODE put the code in the process list: refused with the ways
	// that do not (answer.go).
	f.StringVar(&a.otpArgv, "otp", "", "")
	f.MarkHidden("otp")
	f.DurationVar(&a.timeout, "timeout", 30*time.Second, "deadline for the whole command, challenge prompt included")
	f.DurationVar(&a.budget, "vmmi-budget", 300*time.Millisecond, "auto: how long VMM-I may take before OOB-I is used")
	f.IntVar(&a.oobWindow, "oob-window", 8, "OOB-I: requests to one host in flight at once")
	f.IntVar(&a.oobSessions, "oob-sessions", 3, "OOB-I: RMCP+ sessions to one BMC at most (a BMC's session slots are shared by every user: keep it small; 1 to --oob-window)")
	f.StringVar(&a.oobTransport, "oob-transport", client.TransportIPMI, "OOB-I: carry the queue commands over ipmi (RMCP+) or redfish (the BMC's Redfish OEM action, HTTPS; bmc.redfish in the inventory)")
	f.BoolVar(&a.debug, "debug", false, "log channel decisions to stderr")
	f.StringVar(&a.principal, "principal", "", "speak as this principal (its key and certificate from the inventory's credentials; default: the inventory's principal)")
	f.StringArrayVar(&a.meta, "meta", nil, "key=value metadata sent with each request, journaled by the agent (repeatable)")
	root.AddCommand(a.vmCmd(), a.hostCmd(), a.alertsCmd(), a.enrollCmd(), a.userCmd(), a.watchCmd(), a.principalCmd(), a.historyCmd(), a.approveCmd(), a.resultCmd())
	return root
}

// maxOOBWindow bounds --oob-window: the host serves a window at once and
// the BMC's queues hold its records (bmcsim's default capacity is 1024).
const maxOOBWindow = 64

// exactArgs is cobra.ExactArgs with a usage error.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s: want %d argument(s), got %d (usage: %s)", cmd.CommandPath(), n, len(args), cmd.UseLine())
		}
		return nil
	}
}

// FindInventory picks the inventory file: the flag, then $OOBLAB_INVENTORY,
// then .lab/inventory.json in cwd or a parent, then
// ~/.local/state/ooblab/lab/inventory.json.
func FindInventory(flag string, getenv func(string) string, cwd, home string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if p := getenv("OOBLAB_INVENTORY"); p != "" {
		return p, nil
	}
	for d := cwd; d != ""; {
		p := filepath.Join(d, ".lab", "inventory.json")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		up := filepath.Dir(d)
		if up == d {
			break
		}
		d = up
	}
	if home != "" {
		p := filepath.Join(home, ".local", "state", "ooblab", "lab", "inventory.json")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", usagef("no inventory: give --inventory, set OOBLAB_INVENTORY, or bring a lab up (make lab-up)")
}

func (a *App) loadInventory() error {
	if a.inv != nil {
		return nil
	}
	cwd, _ := os.Getwd()
	home, _ := os.UserHomeDir()
	p, err := FindInventory(a.invPath, a.Getenv, cwd, home)
	if err != nil {
		return err
	}
	inv, err := fileio.LoadInventory(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return usageError{err}
		}
		return err
	}
	a.inv, a.invFile = inv, p
	return nil
}

func (a *App) client() (*client.Client, error) {
	if err := a.loadInventory(); err != nil {
		return nil, err
	}
	meta, err := parseMeta(a.meta)
	if err != nil {
		return nil, err
	}
	o := client.Options{Via: a.via, Principal: a.principal, Challenge: a.answer, Logger: a.log, Now: a.Now,
		Auto: client.AutoOptions{Budget: a.budget}, Metadata: meta,
		OOBOptions: client.OOBOptions{Window: a.oobWindow, Sessions: a.oobSessions, Requester: a.followerID,
			Durable: a.followerID != 0, Transport: a.oobTransport}}
	if a.Options != nil {
		a.Options(&o)
	}
	return client.New(a.inv, o)
}

func (a *App) ctx(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), a.timeout)
}

// emit writes v as JSON or YAML, or calls table for the table format.
func (a *App) emit(v any, table func(w io.Writer)) error {
	switch a.output {
	case "json":
		e := json.NewEncoder(a.Out)
		e.SetIndent("", "  ")
		return e.Encode(v)
	case "yaml":
		// Through JSON, so both formats share field names.
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		var generic any
		if err := json.Unmarshal(b, &generic); err != nil {
			return err
		}
		y, err := yaml.Marshal(generic)
		if err != nil {
			return err
		}
		_, err = a.Out.Write(y)
		return err
	}
	table(a.Out)
	return nil
}

// viaText is the table footer, e.g. "via oob-i 41ms".
func viaText(via string, lat time.Duration) string {
	return fmt.Sprintf("via %s %s", via, roundLatency(lat))
}

func roundLatency(d time.Duration) string {
	switch {
	case d >= 10*time.Millisecond:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
