package metrics

import (
	"context"
	"testing"

	"github.com/bougou/go-ipmi/pkg/handlers"
	"github.com/bougou/go-ipmi/pkg/types"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
)

// The middleware keeps each series' counter after the first request: the
// counts must still land on the right (netfn, cmd, cc) series.
func TestMiddlewareCountsBySeries(t *testing.T) {
	m := New(nil)
	cc := types.CodeOK
	h := m.Middleware("b0")(handlers.HandlerFunc(func(context.Context, *handlers.HandlerContext, []byte) ([]byte, types.CompletionCode, error) {
		return nil, cc, nil
	}))
	devid := &handlers.HandlerContext{Command: types.Command{NetFn: 0x06, ID: 0x01, Name: "GetDeviceID"}}
	chassis := &handlers.HandlerContext{Command: types.Command{NetFn: 0x00, ID: 0x00, Name: "GetChassisCapabilities"}}
	for range 3 {
		h.Handle(context.Background(), devid, nil)
	}
	h.Handle(context.Background(), chassis, nil)
	h.Handle(context.Background(), nil, nil) // no context: netfn/cmd 00, no name
	cc = types.CodeInvalidCommand
	h.Handle(context.Background(), devid, nil)

	for _, tt := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"b0", "0x06", "0x01", "GetDeviceID", "0x00"}, 3},
		{[]string{"b0", "0x06", "0x01", "GetDeviceID", "0xc1"}, 1},
		{[]string{"b0", "0x00", "0x00", "GetChassisCapabilities", "0x00"}, 1},
		{[]string{"b0", "0x00", "0x00", "", "0x00"}, 1},
	} {
		if got := promtest.ToFloat64(m.Requests.WithLabelValues(tt.labels...)); got != tt.want {
			t.Errorf("requests%v = %v, want %v", tt.labels, got, tt.want)
		}
	}
	if n := promtest.CollectAndCount(m.Requests); n != 4 {
		t.Errorf("%d series, want 4", n)
	}
}
