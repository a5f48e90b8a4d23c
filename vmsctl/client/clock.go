package client

import (
	"fmt"
	"time"

	"github.com/ooblab/ooblab/internal/vmsg"
)

// clockOffset is the host's clock minus this VMS's, from the host's time in
// a reply (nil when it has none) and the exchange's start and end: the
// host's time is taken as the midpoint's, so the error is at most half the
// round trip.
func clockOffset(h *vmsg.HostInfo, sent, recv time.Time) *time.Duration {
	if h == nil || h.TimeMs == 0 {
		return nil
	}
	off := time.UnixMilli(h.TimeMs).Sub(sent.Add(recv.Sub(sent) / 2))
	return &off
}

// clockSkewText is what an ErrClockSkew refusal says: the offset measured
// here, where there is one, then the host's words.
func clockSkewText(off *time.Duration, hostText string) string {
	if off == nil {
		return hostText
	}
	dir := "ahead of"
	if *off < 0 {
		dir = "behind"
	}
	return fmt.Sprintf("host is %d s %s this VMS's clock (%s)", int64((off.Abs()+time.Second/2)/time.Second), dir, hostText)
}
