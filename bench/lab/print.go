package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Goals from the issue.
const (
	goalWarm    = 10 * time.Second
	goalCold    = 5 * time.Minute
	goalRatio3  = 2.0
	goalOOBOver = 10 * time.Millisecond
	// goalRedfishOver: the Redfish OOB-I has the same KCS hop and no
	// polling (Queue 2 is pushed), issue 22.
	goalRedfishOver = 5 * time.Millisecond
	goalFail        = 500 * time.Millisecond
	goalShare       = 0.5
)

func printAll(w io.Writer, c *config, r *results) {
	printUps(w, r.ups)
	printRTT(w, c, r.rtt)
	printFailover(w, c, r.failover)
	printPayload(w, r.payload, r.kcs)
	for _, n := range r.notes {
		fmt.Fprintln(w, "note:", n)
	}
}

func tw(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
}

// stageKey folds "guest image (built)" and "guest image (cached)" into one row.
func stageKey(s string) string {
	if strings.HasPrefix(s, "guest image") {
		return "guest image"
	}
	return s
}

func stageOf(u upRun, key string) (time.Duration, bool) {
	var sum time.Duration
	found := false
	for _, s := range u.stages {
		if stageKey(s.Stage) == key {
			sum += s.Elapsed
			found = true
		}
	}
	return sum, found
}

// stageKeys are the stages of every run, in the order first seen.
func stageKeys(ups []upRun) []string {
	var keys []string
	seen := map[string]bool{}
	for _, u := range ups {
		for _, s := range u.stages {
			if k := stageKey(s.Stage); !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}
	return keys
}

// warmRuns are the warm runs with 1 and 3 hosts (nil when not measured).
func warmRuns(ups []upRun) (warm1, warm3 *upRun) {
	for i := range ups {
		if ups[i].label == "warm" && ups[i].hosts == 1 {
			warm1 = &ups[i]
		}
		if ups[i].label == "warm" && ups[i].hosts == 3 {
			warm3 = &ups[i]
		}
	}
	return warm1, warm3
}

func printUps(w io.Writer, ups []upRun) {
	fmt.Fprintf(w, "\n-- 1. lab up, per stage, to ready (both channels answer); seconds --\n")
	if len(ups) == 0 {
		fmt.Fprintln(w, "(not measured)")
		return
	}
	keys := stageKeys(ups)
	warm1, warm3 := warmRuns(ups)
	t := tw(w)
	fmt.Fprint(t, "stage\t")
	for _, u := range ups {
		fmt.Fprintf(t, "%s %d host\t", u.label, u.hosts)
	}
	if warm1 != nil && warm3 != nil {
		fmt.Fprint(t, "3 hosts / 1 host\t")
	}
	fmt.Fprintln(t)
	for _, k := range keys {
		fmt.Fprintf(t, "%s\t", k)
		for _, u := range ups {
			if d, ok := stageOf(u, k); ok {
				fmt.Fprintf(t, "%.2f\t", d.Seconds())
			} else {
				fmt.Fprint(t, "-\t")
			}
		}
		if warm1 != nil && warm3 != nil {
			a, ok1 := stageOf(*warm3, k)
			b, ok2 := stageOf(*warm1, k)
			if ok1 && ok2 && b > time.Millisecond {
				fmt.Fprintf(t, "%.2f×\t", a.Seconds()/b.Seconds())
			} else {
				fmt.Fprint(t, "-\t")
			}
		}
		fmt.Fprintln(t)
	}
	fmt.Fprint(t, "wall (ctl.Up call)\t")
	for _, u := range ups {
		fmt.Fprintf(t, "%.2f\t", u.wall.Seconds())
	}
	if warm1 != nil && warm3 != nil {
		fmt.Fprintf(t, "%.2f×\t", warm3.wall.Seconds()/warm1.wall.Seconds())
	}
	fmt.Fprintln(t)
	t.Flush()
	for _, u := range ups {
		fmt.Fprintf(w, "  %s %d host: load average before %s\n", u.label, u.hosts, u.load)
	}
	for _, u := range ups {
		tot, _ := stageOf(u, "total")
		switch {
		case u.label == "cold":
			fmt.Fprintf(w, "goal cold ≤ %v to ready: %.1f s — %s\n", goalCold, tot.Seconds(), verdict(tot <= goalCold))
		case u.hosts == 1:
			fmt.Fprintf(w, "goal warm ≤ %v to ready, 1 host, TCG, 2 cores: %.1f s — %s\n", goalWarm, tot.Seconds(), verdict(tot <= goalWarm))
		}
	}
	if warm1 != nil && warm3 != nil {
		a, _ := stageOf(*warm3, "total")
		b, _ := stageOf(*warm1, "total")
		x := a.Seconds() / b.Seconds()
		fmt.Fprintf(w, "goal 3 hosts ≤ %.0f× 1 host (warm, total): %.2f× — %s\n", goalRatio3, x, verdict(x <= goalRatio3))
	}
}

func printRTT(w io.Writer, c *config, r *rttResult) {
	fmt.Fprintf(w, "\n-- 2. vm status %s %s round trip (Client.Do), n=%d per channel, interleaved; ms --\n", host, vm, c.n)
	if r == nil {
		fmt.Fprintln(w, "(not measured)")
		return
	}
	t := tw(w)
	fmt.Fprintln(t, "channel\tmedian\tp99\tmin\tmax\tmean\t")
	for _, x := range []struct {
		n string
		s stats
	}{{"vmm-i", r.vmmi}, {"oob-i", r.oob}} {
		fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\t%s\t\n", x.n, ms(x.s.median), ms(x.s.p99), ms(x.s.min), ms(x.s.max), ms(x.s.avg))
	}
	fmt.Fprintf(t, "oob-i − vmm-i\t%s\t%s\t\t\t\t\n", ms(r.oob.median-r.vmmi.median), ms(r.oob.p99-r.vmmi.p99))
	if x := r.redfish; x.n > 0 {
		fmt.Fprintf(t, "oob-i (redfish)\t%s\t%s\t%s\t%s\t%s\t\n", ms(x.median), ms(x.p99), ms(x.min), ms(x.max), ms(x.avg))
		fmt.Fprintf(t, "oob-i (redfish) − vmm-i\t%s\t%s\t\t\t\t\n", ms(x.median-r.vmmi.median), ms(x.p99-r.vmmi.p99))
	}
	t.Flush()
	fmt.Fprintf(w, "  oob-i: %.1f queue-2 reads per request (client polls every 1 ms for 250 ms, then doubling to 50 ms); load average before %s\n", r.oobReads, r.load)
	d := r.oob.median - r.vmmi.median
	fmt.Fprintf(w, "goal oob-i ≤ vmm-i + %v (median): +%s ms — %s\n", goalOOBOver, ms(d), verdict(d <= goalOOBOver))
	if r.redfish.n > 0 {
		d := r.redfish.median - r.vmmi.median
		fmt.Fprintf(w, "goal oob-i (redfish) ≤ vmm-i + %v (median): +%s ms — %s\n", goalRedfishOver, ms(d), verdict(d <= goalRedfishOver))
	}
}

func budgetName(b time.Duration) string {
	if b == 0 {
		return "default"
	}
	return b.String()
}

func printFailover(w io.Writer, c *config, runs []failoverRun) {
	fmt.Fprintf(w, "\n-- 3. failover: unplug VMM-I (QMP set_link) → first vm status answer over OOB-I, auto client; ms --\n")
	if len(runs) == 0 {
		fmt.Fprintln(w, "(not measured)")
		return
	}
	t := tw(w)
	fmt.Fprintln(t, "auto budget\trep\ttotal\tset_link\toob-i exchange\tDo calls\tvmm-i answers after unplug\treplug → vmm-i answers\t")
	byBudget := map[time.Duration][]time.Duration{}
	var order []time.Duration
	rep := map[time.Duration]int{}
	for _, f := range runs {
		rep[f.budget]++
		if _, ok := byBudget[f.budget]; !ok {
			order = append(order, f.budget)
		}
		byBudget[f.budget] = append(byBudget[f.budget], f.total)
		fmt.Fprintf(t, "%s\t%d\t%s\t%s\t%s\t%d\t%d\t%s\t\n", budgetName(f.budget), rep[f.budget], ms(f.total), ms(f.setLink),
			ms(f.oobLatency), f.tries, f.viaVMMI, ms(f.recover))
	}
	t.Flush()
	for _, b := range order {
		s := summarize(byBudget[b])
		fmt.Fprintf(w, "goal failover ≤ %v, budget %s: median %s ms, max %s ms (n=%d) — %s\n", goalFail, budgetName(b),
			ms(s.median), ms(s.max), s.n, verdict(s.max <= goalFail))
	}
	fmt.Fprintln(w, "  (default budget: client.AutoOptions.Budget zero value; each repetition uses a new auto client, so the OOB-I session is opened inside the failover)")
}

func printPayload(w io.Writer, p *payloadResult, k *kcsResult) {
	fmt.Fprintf(w, "\n-- 4. sealed payload over OOB-I (VMS → BMC queue 1 → guest KCS → hvagent) vs raw KCS ceiling --\n")
	if k != nil {
		t := tw(w)
		fmt.Fprintln(t, "raw KCS (bench/kcs guest, bmcsim)\tbytes moved\tmedian µs\tp99 µs\tbytes/s\t")
		for _, m := range kcsRows {
			f := k.rows[m]
			if f == nil {
				continue
			}
			moved := f["reqbytes"]
			if f["dir"] == "resp" {
				moved = f["respbytes"] + " (answer)"
			}
			fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\t\n", m, moved, f["median_us"], f["p99_us"], f["bytes_per_s"])
		}
		t.Flush()
		fmt.Fprintf(w, "  load average before %s\n", k.load)
	}
	if p == nil {
		fmt.Fprintln(w, "(sealed payload not measured)")
		return
	}
	t := tw(w)
	fmt.Fprintln(t, "sealed request\tmetadata bytes\tsealed bytes\trecords\tmedian ms\tp99 ms\tsealed bytes/s\tmetadata bytes/s\t")
	sealedRate := float64(p.sealedBytes) / p.lat.median.Seconds()
	metaRate := float64(p.metaBytes) / p.lat.median.Seconds()
	fmt.Fprintf(t, "status + %d B metadata, n=%d\t%d\t%d\t%d\t%s\t%s\t%.0f\t%.0f\t\n", p.metaBytes, p.lat.n, p.metaBytes, p.sealedBytes, p.records,
		ms(p.lat.median), ms(p.lat.p99), sealedRate, metaRate)
	var marginal float64
	if p.small > 0 && p.lat.median > p.small {
		marginal = float64(p.sealedBytes-p.smallSealed) / (p.lat.median - p.small).Seconds()
		fmt.Fprintf(t, "marginal (minus a %d B status, %s ms)\t\t%d\t\t%s\t\t%.0f\t\t\n", p.smallSealed, ms(p.small),
			p.sealedBytes-p.smallSealed, ms(p.lat.median-p.small), marginal)
	}
	t.Flush()
	fmt.Fprintf(w, "  write retries %d, queue-1-full waits %d; load average before %s\n", p.writeRetries, p.fullWaits, p.load)
	if c := k.ceilings(); c.same > 0 {
		fmt.Fprintf(w, "goal sealed ≥ %.0f%% of the raw ceiling of the same path (%s, %.0f B/s): %.0f%% (marginal %.0f%%) — %s\n",
			goalShare*100, c.sameName, c.same, 100*sealedRate/c.same, 100*marginal/c.same, verdict(sealedRate >= goalShare*c.same))
		if c.write > 0 {
			fmt.Fprintf(w, "  of the guest-to-BMC ceiling (oemwrite-240, %.0f B/s; the answers' direction): %.0f%% (marginal %.0f%%)\n",
				c.write, 100*sealedRate/c.write, 100*marginal/c.write)
		}
	}
}
