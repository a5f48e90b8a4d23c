package cmd

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

// resultOut is the output of vmsctl result.
type resultOut struct {
	Host      string      `json:"host"`
	RequestID string      `json:"request_id"`
	Via       string      `json:"via"`
	LatencyMs float64     `json:"latency_ms"`
	Request   *historyRow `json:"request"`
}

func (a *App) resultCmd() *cobra.Command {
	var wait bool
	c := &cobra.Command{
		Use:   "result HOST REQUEST-ID",
		Short: "The journalled outcome of a request (after exit 7, outcome unknown), over either channel",
		Long: `result asks the host's agent, over either channel, for the outcome its journal holds
for REQUEST-ID (as an error line printed it, 16 hex digits). It reads the agent's
history (read-only): asking never runs the request. Exit codes are the request's own
(0 ok, 1 failed on the host, 3 refused, 6 no such VM, …); 7 when the journal has no
outcome for it: not arrived, still running, interrupted, or older than the last 50
state changes. --wait asks again until the outcome is there or --timeout ends.`,
		Args: exactArgs(2), ValidArgsFunction: a.hostNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseRequestID(args[1])
			if err != nil {
				return err
			}
			cl, err := a.client()
			if err != nil {
				return err
			}
			defer cl.Close()
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			host := args[0]
			it, res, err := cl.Lookup(ctx, host, id, wait)
			if errors.Is(err, client.ErrNotJournalled) {
				return &client.RequestError{Host: host, RequestID: id, Err: &client.OutcomeUnknownError{Err: errors.Unwrap(err)}}
			}
			if err != nil {
				return err
			}
			row := historyRows([]vmsg.HistoryItem{*it})[0]
			out := resultOut{Host: host, RequestID: row.RequestID, Via: res.Via, LatencyMs: ms(res.Latency), Request: &row}
			if err := a.emit(out, func(w io.Writer) {
				outcome := "ok"
				if row.State != "" {
					outcome += " (" + row.State + ")"
				}
				if !row.OK {
					outcome = (&client.ReplyError{Code: it.Code, Text: it.Error}).Error()
				}
				fmt.Fprintf(w, "%s %s on %s (request %s, %s, via %s at %s): %s\n", row.Action, row.VM, host, row.RequestID, row.Principal,
					row.Via, row.Time.Format("2006-01-02T15:04:05Z"), outcome)
			}); err != nil {
				return err
			}
			if !it.OK {
				return &client.RequestError{Host: host, RequestID: id, Err: &client.ReplyError{Code: it.Code, Text: it.Error}}
			}
			return nil
		},
	}
	c.Flags().BoolVar(&wait, "wait", false, "ask again until the outcome is journalled or --timeout ends")
	return c
}

// parseRequestID reads a request id as vmsctl prints it (16 hex digits,
// 0x allowed).
func parseRequestID(s string) (uint64, error) {
	id, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(s), "0x"), 16, 64)
	if err != nil || id == 0 {
		return 0, usagef("request id %q: want the 16 hex digits an error line or -o json printed", s)
	}
	return id, nil
}
