package cmd

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/ooblab/ooblab/internal/vmsg"
)

// DefaultParallel is how many hosts a command with no host named talks to at
// once. One RMCP+ session per BMC and one TLS connection per hvagent: at
// 1000 hosts an unbounded fan-out opens 1000 sockets in the same instant,
// which bursts past a BMC's or a firewall's rate limits and costs more in
// retransmits than it wins. Measured over a 1000-BMC bmcsim fleet with 1000
// hosts on 2 cores (bench/fleet -serve 1000, machine load ~14): 8: 3.6 s,
// 16: 3.5 s, 32: 1.7-2.4 s, 64: 2.3-2.6 s, 128: 3.5 s, 200: 4.9 s with
// timeouts. 32 is as fast as any and gentlest on the BMCs' network.
const DefaultParallel = 32

// fanOut holds the fan-out flags of the commands that address every host.
type fanOut struct {
	parallel int
	progress string // auto, always, never
}

// addFlags registers --parallel and --progress on fs.
func (f *fanOut) addFlags(fs *pflag.FlagSet) {
	fs.IntVar(&f.parallel, "parallel", DefaultParallel, "hosts addressed at once when several are")
	f.progress = "auto"
	fs.Var((*progressFlag)(&f.progress), "progress", "progress bar on stderr: auto (when stderr is a terminal and there are many hosts), always or never")
}

// progressFlag refuses anything but auto, always and never at parse time.
type progressFlag string

func (p *progressFlag) String() string { return string(*p) }
func (p *progressFlag) Type() string   { return "auto|always|never" }
func (p *progressFlag) Set(s string) error {
	switch s {
	case "auto", "always", "never":
		*p = progressFlag(s)
		return nil
	}
	return fmt.Errorf("want auto, always or never")
}

// progressMin is the host count from which auto shows a bar: a few hosts
// answer before a bar would be worth drawing.
const progressMin = 20

// run calls fn(ctx, i) for i in [0, n) with at most f.parallel calls at once,
// in index order, and returns when all have returned. fn must honour ctx:
// when it ends, the calls not yet started still run (so each index gets its
// error) but fail fast. With a bar, each finished call advances it.
func (f *fanOut) run(ctx context.Context, stderr io.Writer, n int, what string, fn func(ctx context.Context, i int)) {
	limit := f.parallel
	if limit < 1 {
		limit = DefaultParallel
	}
	limit = min(limit, n)
	bar := f.bar(stderr, n, what)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range limit {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				fn(ctx, i)
				if bar != nil {
					_ = bar.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if bar != nil {
		_ = bar.Finish()
		_ = bar.Clear()
	}
}

// bar returns a progress bar on stderr, or nil when none should be drawn.
func (f *fanOut) bar(stderr io.Writer, n int, what string) *progressbar.ProgressBar {
	switch f.progress {
	case "always":
	case "auto":
		if n < progressMin || !isTerminal(stderr) {
			return nil
		}
	default: // never, or a command without the flag (watch draws its own screen)
		return nil
	}
	return progressbar.NewOptions(n,
		progressbar.OptionSetWriter(stderr),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionSetPredictTime(false),
	)
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	fd, ok := w.(*os.File)
	return ok && term.IsTerminal(int(fd.Fd()))
}

// listArgs lets `vm list` take no host (every host) or one.
func listArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 1 {
		return usagef("%s: want at most 1 argument, got %d (usage: %s)", cmd.CommandPath(), len(args), cmd.UseLine())
	}
	return nil
}

// listAll is `vm list` with no host: every host's VMs, fanned out like
// host status. The table has a line per VM and one per host that did not
// answer; -o json/yaml gives host status's rows (with their vms).
func (a *App) listAll(cmd *cobra.Command) error {
	return a.surveyEmit(cmd, nil, vmsg.CmdList, func(w io.Writer, rows []hostRow) {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "HOST\tNAME\tSTATE\tVCPUS\tMEMORY\tCHANNEL")
		vms, up := 0, 0
		for _, r := range rows {
			if r.err != nil {
				fmt.Fprintf(tw, "%s\t-\t%s\t-\t-\t-\n", r.Name, r.Error)
				continue
			}
			up++
			via := viaText(r.Via, time.Duration(r.LatencyMs*float64(time.Millisecond)))
			for _, v := range r.VMs {
				vms++
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d MiB\t%s\n", r.Name, v.Name, v.State, v.VCPUs, v.MemoryKiB/1024, via)
			}
		}
		tw.Flush()
		fmt.Fprintf(w, "%d VM(s) on %d of %d host(s)\n", vms, up, len(rows))
	})
}
