package client

import (
	"fmt"
	"time"

	"github.com/ooblab/ooblab/internal/record"
	"github.com/ooblab/ooblab/internal/vmsg"
)

// ReasonDropped starts the reason of the alert vmsctl makes of the BMC's
// "alerts dropped" marker (internal/record.DroppedMarker).
const ReasonDropped = "alerts dropped"

// droppedAlert is the alert a follower shows for r when r is the BMC's
// marker of alerts dropped from its alert log (full, or kept past its
// retention unread); nil for any other record. The marker is the BMC's
// word, not sealed by the host: it carries a count and nothing else.
func droppedAlert(t *Target, r *record.Record) *vmsg.Alert {
	n, ok, err := record.DroppedMarker(*r)
	if !ok {
		return nil
	}
	a := &vmsg.Alert{TimeMs: time.Now().UnixMilli(), Host: t.Name(), Principal: "bmc", Action: "alert-log"}
	if err != nil {
		a.Reason = fmt.Sprintf("%s: the BMC marked alerts as dropped but the marker is malformed (%v)", ReasonDropped, err)
		return a
	}
	a.Reason = fmt.Sprintf("%s: up to %d alerts were dropped from the BMC's alert log before this follower read them (it was full, or they outlived its retention); see the host's log, SEL or hook for them", ReasonDropped, n)
	return a
}
