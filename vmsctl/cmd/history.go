package cmd

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ooblab/ooblab/internal/vmsg"
)

// parseMeta reads --meta key=value flags.
func parseMeta(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usagef("--meta %q: want key=value", kv)
		}
		if _, dup := m[k]; dup {
			return nil, usagef("--meta: key %q given twice", k)
		}
		m[k] = v
	}
	return m, nil
}

// historyRow is one executed request.
type historyRow struct {
	Time      time.Time         `json:"time"`
	RequestID string            `json:"request_id"`
	Principal string            `json:"principal"`
	Via       string            `json:"via"`
	Action    string            `json:"action"`
	VM        string            `json:"vm,omitempty"`
	OK        bool              `json:"ok"`
	Error     string            `json:"error,omitempty"`
	State     string            `json:"state,omitempty"`
	Metadata  map[string]string `json:"metadata,omitempty"`
	VMSOOBI   string            `json:"vms_oob_i,omitempty"`
	VMSVMMI   string            `json:"vms_vmm_i,omitempty"`
}

type historyOut struct {
	Host      string       `json:"host"`
	Via       string       `json:"via"`
	LatencyMs float64      `json:"latency_ms"`
	Requests  []historyRow `json:"requests"`
}

func historyRows(items []vmsg.HistoryItem) []historyRow {
	out := make([]historyRow, 0, len(items))
	for _, it := range items {
		e := it.Executed
		out = append(out, historyRow{Time: time.UnixMilli(e.TimeMs).UTC(), RequestID: fmt.Sprintf("%016x", it.RequestID),
			Principal: e.Principal, Via: e.Via, Action: e.Command.String(), VM: e.VM, OK: it.OK, Error: it.Error,
			State: it.State, Metadata: e.Metadata, VMSOOBI: e.OOBAddr, VMSVMMI: e.VMMAddr})
	}
	return out
}

// dash is s, or "-" when s is empty.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func metaText(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%s", k, m[k])
	}
	return b.String()
}

func (a *App) historyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "history HOST",
		Short: "The state changes hvagent executed on the host (from its journal), over either channel",
		Long: `history lists the VM state changes the host's agent executed, oldest first (at most
the last 50, within the journal's 24 h): time, principal, channel, action, VM,
outcome, the --meta metadata and the VMS's own OOB-I and VMM-I addresses the
request carried.
Read-only requests (list, status, ping) are not listed.`,
		Args: exactArgs(1), ValidArgsFunction: a.hostNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := a.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			res, err := cl.Do(ctx, args[0], vmsg.CmdHistory, "")
			if err != nil {
				return err
			}
			out := historyOut{Host: args[0], Via: res.Via, LatencyMs: ms(res.Latency), Requests: historyRows(res.Reply.History)}
			return a.emit(out, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "TIME\tPRINCIPAL\tVIA\tACTION\tVM\tOUTCOME\tMETADATA\tVMS OOB-I/VMM-I")
				for _, r := range out.Requests {
					outcome := "ok"
					if r.State != "" {
						outcome += " (" + r.State + ")"
					}
					if !r.OK {
						outcome = "failed: " + r.Error
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s/%s\n", r.Time.Local().Format(time.DateTime), r.Principal, r.Via, r.Action, r.VM, outcome,
						metaText(r.Metadata), dash(r.VMSOOBI), dash(r.VMSVMMI))
				}
				tw.Flush()
				fmt.Fprintf(w, "%s: %d request(s), %s\n", out.Host, len(out.Requests), viaText(out.Via, res.Latency))
			})
		},
	}
}
