package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ooblab/ooblab/internal/vmsg"
)

// ErrNotJournalled: the host's journal has no outcome for the request id
// (yet): it never arrived, it is still running, it was interrupted, or it
// is older than the state changes a history answer holds.
var ErrNotJournalled = errors.New("no outcome in the host's journal")

// Lookup asks host, over the client's channel (either channel in auto
// mode), for the journalled outcome of request id: a history request,
// read-only, so asking never runs anything (a re-send of the request
// itself would run it if it never arrived). An action the host lists as
// still running has no outcome yet (ErrNotJournalled). With wait, it asks
// again (1 s, doubling to 5 s) until the outcome is there or ctx ends. The
// Result is the history request's; the item is the request's outcome.
func (c *Client) Lookup(ctx context.Context, host string, id uint64, wait bool) (*vmsg.HistoryItem, *Result, error) {
	pause := time.Second
	for {
		res, err := c.Do(ctx, host, vmsg.CmdHistory, "")
		if err != nil {
			return nil, res, err
		}
		why := fmt.Sprintf("not arrived, still running, interrupted, or older than the last %d state changes", len(res.Reply.History))
		for i := range res.Reply.History {
			it := &res.Reply.History[i]
			if it.RequestID != id {
				continue
			}
			if !it.OK && it.Code == vmsg.ErrInProgress {
				// Listed, but running: no outcome yet.
				why = "still running on the host"
				break
			}
			return it, res, nil
		}
		nf := &RequestError{Host: host, RequestID: id, Err: fmt.Errorf("%w: %s", ErrNotJournalled, why)}
		if !wait {
			return nil, res, nf
		}
		if err := sleep(ctx, pause); err != nil {
			nf.Err = fmt.Errorf("%w (waited: %w)", nf.Err, err)
			return nil, res, nf
		}
		pause = min(2*pause, 5*time.Second)
	}
}
