package main

// The ipmitool row: `ipmitool -I lanplus -C 3 exec FILE`, FILE holding N
// lines "raw 0x06 0x01", runs N Get Device ID requests in one session, one
// outstanding, with ipmitool's own packet code and timing. The wall time of
// the whole exec (session setup and close included) is measured per target,
// the runs interleaved target by target, and the median run compared.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/ooblab/ooblab/bench/results"
)

// execCommand is each line of the exec file; ipmitool prints its answer on
// one line.
const execCommand = "raw 0x06 0x01"

type execResult struct {
	t         target
	walls     []time.Duration // one per run, in run order
	serverCPU time.Duration   // summed over the runs; -1: unknown
	toolCPU   time.Duration   // ipmitool's user+system, summed
}

func (r *execResult) median() time.Duration {
	s := slices.Clone(r.walls)
	slices.Sort(s)
	return s[len(s)/2]
}

// runExec runs ipmitool exec of n commands against each suite-3 target in
// turn, runs times, and returns one result per target.
func runExec(targets []target, n, runs int, user, pass string) ([]*execResult, error) {
	tool, err := exec.LookPath("ipmitool")
	if err != nil {
		return nil, errors.New("ipmitool not installed (apt-get install ipmitool)")
	}
	dir, err := os.MkdirTemp("", "lanbench-exec-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "cmds")
	if err := os.WriteFile(file, bytes.Repeat([]byte(execCommand+"\n"), n), 0o644); err != nil {
		return nil, err
	}
	var rs []*execResult
	seen := map[string]bool{}
	for _, t := range targets {
		if t.suite == 3 && !seen[t.label] { // ipmi_sim has no suite 17: compare suite 3
			seen[t.label] = true
			rs = append(rs, &execResult{t: t})
		}
	}
	for range runs {
		for _, r := range rs {
			srv0 := procCPU(r.t.pid)
			wall, tcpu, err := execOnce(tool, file, r.t.addr, user, pass, n)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", r.t.label, err)
			}
			srv1 := procCPU(r.t.pid)
			r.walls = append(r.walls, wall)
			r.toolCPU += tcpu
			if srv0 >= 0 && srv1 >= 0 && r.serverCPU >= 0 {
				r.serverCPU += srv1 - srv0
			} else {
				r.serverCPU = -1
			}
		}
	}
	return rs, nil
}

// execOnce runs one ipmitool exec and checks that every command answered.
func execOnce(tool, file, addr, user, pass string, n int) (wall, cpu time.Duration, err error) {
	host, port, _ := strings.Cut(addr, ":")
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(n)*10*time.Millisecond+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool, "-I", "lanplus", "-H", host, "-p", port, "-U", user, "-P", pass, "-C", "3", "exec", file)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	t0 := time.Now()
	err = cmd.Run()
	wall = time.Since(t0)
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	if err != nil {
		return wall, cpu, fmt.Errorf("ipmitool exec: %v: %s", err, firstLine(stderr.String()))
	}
	answers := 0
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) != "" {
			answers++
		}
	}
	if answers != n {
		return wall, cpu, fmt.Errorf("ipmitool exec: %d answers to %d commands: %s", answers, n, firstLine(stderr.String()))
	}
	return wall, cpu, nil
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}

// printExec prints the ipmitool rows and the ratio a/b of median wall time.
func printExec(rs []*execResult, n int, ratio string) {
	fmt.Printf("\nipmitool -I lanplus -C 3 exec: %d × %q in one session, %d runs per target interleaved, median run:\n\n", n, execCommand, len(rs[0].walls))
	tw := tabwriter.NewWriter(os.Stdout, 2, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\tmedian wall\tmin\tmax\treq/s\tipmitool CPU/run\tserver CPU/run\tserver µs/req\t")
	for _, r := range rs {
		s := slices.Clone(r.walls)
		slices.Sort(s)
		srv, per := "-", "-"
		if r.serverCPU >= 0 {
			srv = fmt.Sprintf("%.0f ms", r.serverCPU.Seconds()*1e3/float64(len(s)))
			per = fmt.Sprintf("%.1f", r.serverCPU.Seconds()*1e6/float64(len(s)*n))
		}
		fmt.Fprintf(tw, "%s\t%.3f s\t%.3f s\t%.3f s\t%.0f\t%.0f ms\t%s\t%s\t\n", r.t.label, r.median().Seconds(), s[0].Seconds(), s[len(s)-1].Seconds(),
			float64(n)/r.median().Seconds(), r.toolCPU.Seconds()*1e3/float64(len(s)), srv, per)
	}
	if a, b := execPair(rs, ratio); a != nil && b != nil {
		fmt.Fprintf(tw, "%s/%s\t×%.3f\t\t\t\t\t\t\t\n", a.t.label, b.t.label, a.median().Seconds()/b.median().Seconds())
	}
	tw.Flush()
}

func execPair(rs []*execResult, ratio string) (a, b *execResult) {
	la, lb, ok := strings.Cut(ratio, "/")
	if !ok {
		return nil, nil
	}
	for _, r := range rs {
		switch r.t.label {
		case la:
			a = r
		case lb:
			b = r
		}
	}
	return a, b
}

// addExec adds the ipmitool table to the JSON report.
func (p *report) addExec(rs []*execResult, n int, ratio string) {
	t := results.Table{ID: "ipmitool-exec", Title: fmt.Sprintf("ipmitool -I lanplus -C 3 exec: %d × %q in one session (median of %d runs, interleaved)", n, execCommand, len(rs[0].walls)),
		Goal: "bmcsim's wall time ≤ 1.00× ipmi_sim's",
		Columns: []results.Column{
			{Name: "wall", Unit: "s", Better: "lower"},
			{Name: "min", Unit: "s", Better: "lower"},
			{Name: "req/s", Unit: "1/s", Better: "higher"},
			{Name: "server µs/req", Unit: "µs", Better: "lower"},
		},
		Notes: []string{"Wall time of the whole ipmitool process: session setup, " + strconv.Itoa(n) + " requests one at a time, close. Ratio row: A's median wall time over B's (below 1 favours A)."}}
	for _, r := range rs {
		s := slices.Clone(r.walls)
		slices.Sort(s)
		var per *float64
		if r.serverCPU >= 0 {
			per = results.V(r.serverCPU.Seconds() * 1e6 / float64(len(s)*n))
		}
		t.AddRow(r.t.label+" suite 3", results.V(r.median().Seconds()), results.V(s[0].Seconds()), results.V(float64(n)/r.median().Seconds()), per)
	}
	if a, b := execPair(rs, ratio); a != nil && b != nil {
		var per *float64
		if a.serverCPU > 0 && b.serverCPU > 0 {
			per = results.V(a.serverCPU.Seconds() / b.serverCPU.Seconds())
		}
		sa, sb := slices.Min(a.walls), slices.Min(b.walls)
		t.AddRow(a.t.label+"/"+b.t.label, results.V(a.median().Seconds()/b.median().Seconds()), results.V(sa.Seconds()/sb.Seconds()),
			results.V(b.median().Seconds()/a.median().Seconds()), per)
	}
	p.extra = append(p.extra, t)
}
