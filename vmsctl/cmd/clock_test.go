package cmd

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ooblab/ooblab/internal/vmsg"
)

// TestClockSkewShown: an agent's clock-skew answer (its clock 312 s ahead of
// this VMS's) is shown with the offset measured here and exits 8; host
// status shows the offset in its CLOCK column.
func TestClockSkewShown(t *testing.T) {
	at := time.Date(2026, 11, 29, 14, 0, 0, 0, time.UTC)
	r := newRig(t)
	r.now = func() time.Time { return at }
	skewed := func(ctx context.Context, host string, req *vmsg.Request) (vmsg.Message, error) {
		return &vmsg.Reply{RequestID: req.ID, Code: vmsg.ErrClockSkew,
			Error: "not run: this host's clock is 312 s ahead of the request's issue time; requests are served only when the VMS's and the host's clocks agree within 30 s",
			Host:  &vmsg.HostInfo{HostID: host, TimeMs: at.Add(312 * time.Second).UnixMilli()}}, nil
	}
	r.vmmi.Handle, r.oob.Handle = skewed, skewed
	code, _, errs := r.run(t, "vm", "list", "h1")
	if code != ExitClockSkew || !strings.Contains(errs, "clock skew: host is 312 s ahead of this VMS's clock (not run: ") {
		t.Fatalf("vm list: exit %d, stderr %q", code, errs)
	}
	code, out, _ := r.run(t, "host", "status", "h1")
	if code != ExitClockSkew || !strings.Contains(out, "+312s") {
		t.Fatalf("host status: exit %d\n%s", code, out)
	}
}
