package admin

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ooblab/ooblab/bmcsim/sensors"
	"github.com/ooblab/ooblab/internal/testutil"
)

type host struct{}

func (host) PowerOn() bool                  { return true }
func (host) CPUTime() (time.Duration, bool) { return 0, false }

type recorder struct {
	mu  sync.Mutex
	evs []sensors.Event
}

func (r *recorder) add(e sensors.Event) { r.mu.Lock(); r.evs = append(r.evs, e); r.mu.Unlock() }
func (r *recorder) n() int              { r.mu.Lock(); defer r.mu.Unlock(); return len(r.evs) }

func newServer(t *testing.T) (*Client, *recorder, string) {
	t.Helper()
	rec := &recorder{}
	m := sensors.NewModel(host{}, 1, rec.add)
	path := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	h := Handler(func(name string) (*sensors.Model, bool) { return m, name == "h1" }, slog.New(slog.DiscardHandler))
	testutil.Serve(t, "admin", func(ctx context.Context) error { return Serve(ctx, ln, h) })
	return NewClient(path), rec, path
}

func TestPinRelease(t *testing.T) {
	c, rec, path := newServer(t)
	ctx := context.Background()
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, %v; want 0600", fi.Mode(), err)
	}
	out, err := c.Pin(ctx, "h1", "inlet temp", 48)
	if err != nil || !strings.Contains(out, "Inlet Temp pinned at 48") {
		t.Fatalf("pin: %q, %v", out, err)
	}
	if rec.n() != 2 {
		t.Errorf("%d events after pinning past UNC and UCR, want 2", rec.n())
	}
	rs, err := c.Readings(ctx, "h1")
	if err != nil || len(rs) != len(sensors.Defs) || rs[1].Value != 48 || strings.Join(rs[1].Asserted, ",") != "unc,ucr" {
		t.Fatalf("readings %+v, %v", rs, err)
	}
	if _, err := c.Release(ctx, "h1", "2"); err != nil {
		t.Fatal(err)
	}
	if rec.n() != 4 {
		t.Errorf("%d events after release, want 4", rec.n())
	}
	for _, tc := range []struct {
		bmc, sensor, want string
	}{
		{"h9", "Inlet Temp", `no BMC named "h9"`},
		{"h1", "Oil Temp", `no sensor "Oil Temp" (names: "CPU Temp"`},
		{"h1", "Host Power", "discrete"},
	} {
		if _, err := c.Pin(ctx, tc.bmc, tc.sensor, 1); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("pin %s %s: %v, want %q", tc.bmc, tc.sensor, err, tc.want)
		}
	}
}

// FuzzPinBody sends arbitrary bodies and sensor names to the pin route.
func FuzzPinBody(f *testing.F) {
	f.Add("Inlet Temp", `{"value": 48}`)
	f.Add("7", `{"value": 1e400}`)
	f.Add("cpu temp", `{"value": null}`)
	m := sensors.NewModel(host{}, 1, nil)
	h := Handler(func(string) (*sensors.Model, bool) { return m, true }, slog.New(slog.DiscardHandler))
	f.Fuzz(func(t *testing.T, sensor, body string) {
		req := httptest.NewRequest(http.MethodPut, sensorPath("h1", sensor), strings.NewReader(body))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		_, _ = io.ReadAll(w.Body)
	})
}
