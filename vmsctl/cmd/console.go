package cmd

import (
	"bufio"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/ooblab/ooblab/vmsctl/client"
)

// hostConsoleCmd is host console HOST: the host's serial console over
// Serial-over-LAN through its BMC.
func (a *App) hostConsoleCmd() *cobra.Command {
	var force bool
	var escape string
	c := &cobra.Command{
		Use:   "console HOST",
		Short: "The host's serial console through its BMC (IPMI Serial-over-LAN); ~. quits",
		Long: `Attach the terminal to the host's serial console (ttyS0) through its BMC, as
'ipmitool -I lanplus sol activate' does: IPMI v2.0 Serial-over-LAN in an
encrypted, authenticated RMCP+ session with the inventory's BMC credentials.
On a terminal it goes into raw mode: every key, Ctrl-C included, goes to the
host. Type the escape character at the start of a line, then '.', to quit
(default '~', so Enter ~ .); escape twice sends it once. One SOL session per
host: a console already in use is refused unless --force takes it over.`,
		Args: exactArgs(1), ValidArgsFunction: a.hostNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(escape) != 1 {
				return usagef("--escape %q: want one character", escape)
			}
			cl, err := a.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			host := args[0]
			if _, err := a.inv.Host(host); err != nil {
				return err
			}
			in := a.In
			restore := func() {}
			if f, ok := a.In.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
				st, err := term.MakeRaw(int(f.Fd()))
				if err != nil {
					return fmt.Errorf("raw mode on the terminal: %w", err)
				}
				restore = func() { _ = term.Restore(int(f.Fd()), st) }
			}
			defer restore()
			err = cl.HostConsole(cmd.Context(), host, newEscapeReader(in, escape[0]), a.Out, client.ConsoleOptions{
				Force: force,
				OnActive: func() {
					fmt.Fprintf(a.Err, "[%s: serial console up; %s. quits]\r\n", host, escape)
				},
				OnRestart: func(err error) {
					fmt.Fprintf(a.Err, "\r\n[%s: the BMC missed packets (%v); console resumed]\r\n", host, err)
				},
			})
			restore()
			if err != nil {
				return err
			}
			fmt.Fprintf(a.Err, "\r\n[%s: serial console closed]\n", host)
			return nil
		},
	}
	c.Flags().BoolVar(&force, "force", false, "take over a console another SOL session holds (deactivates it)")
	c.Flags().StringVar(&escape, "escape", "~", "escape character: at the start of a line, then '.' quits")
	return c
}

// escapeReader passes keys through and ends (io.EOF) at the escape
// sequence: the escape character at the start of a line (or of the
// session) followed by '.'. The escape character typed twice there sends
// one; followed by anything else, both go through.
type escapeReader struct {
	r         *bufio.Reader
	esc       byte
	lineStart bool
	pending   []byte
}

func newEscapeReader(r io.Reader, esc byte) *escapeReader {
	return &escapeReader{r: bufio.NewReader(r), esc: esc, lineStart: true}
}

func (e *escapeReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for len(e.pending) == 0 {
		b, err := e.r.ReadByte()
		if err != nil {
			return 0, err
		}
		if !e.lineStart || b != e.esc {
			e.lineStart = b == '\r' || b == '\n'
			e.pending = append(e.pending, b)
			break
		}
		next, err := e.r.ReadByte()
		if err != nil {
			return 0, err
		}
		switch next {
		case '.':
			return 0, io.EOF
		case e.esc:
			e.pending = append(e.pending, e.esc)
			e.lineStart = false
		default:
			e.pending = append(e.pending, e.esc, next)
			e.lineStart = next == '\r' || next == '\n'
		}
	}
	n := copy(p, e.pending)
	e.pending = e.pending[n:]
	return n, nil
}
