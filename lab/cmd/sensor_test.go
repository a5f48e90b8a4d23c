package cmd

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ooblab/ooblab/bmcsim/admin"
	"github.com/ooblab/ooblab/bmcsim/app"
	"github.com/ooblab/ooblab/bmcsim/config"
	"github.com/ooblab/ooblab/lab/ctl"
)

// TestSensorCommand: `lab sensor h1 "Inlet Temp" 48` pins the reading of a
// bmcsim process's BMC through its admin socket; --release lets it go.
func TestSensorCommand(t *testing.T) {
	dir := t.TempDir()
	f := &config.File{Admin: ctl.AdminSocket(dir), BMCs: []config.Config{{
		Name: "h1", LAN: "127.0.0.1:0",
		Users: []config.User{{Name: "admin", Password: "s3cret-admin", Privilege: "administrator"}},
	}}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx, f, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("bmcsim: %v", err)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(f.Admin); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no admin socket after 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	lab := func(args ...string) (string, int) {
		var out, errb bytes.Buffer
		code := Run(context.Background(), append([]string{"--dir", dir, "sensor"}, args...), &out, &errb)
		return out.String() + errb.String(), code
	}
	if out, code := lab("h1", "Inlet Temp", "48"); code != 0 || out != "h1: Inlet Temp pinned at 48\n" {
		t.Fatalf("pin: %d %q", code, out)
	}
	rs, err := admin.NewClient(f.Admin).Readings(context.Background(), "h1")
	if err != nil || strings.Join(rs[1].Asserted, ",") != "unc,ucr" {
		t.Fatalf("readings %+v, %v", rs, err)
	}
	if out, code := lab("h1", "Inlet Temp", "--release"); code != 0 || out != "h1: Inlet Temp released\n" {
		t.Fatalf("release: %d %q", code, out)
	}
	for _, bad := range [][]string{{"h1", "Inlet Temp"}, {"h1", "Inlet Temp", "hot"}, {"h2", "Inlet Temp", "1"}} {
		if out, code := lab(bad...); code == 0 {
			t.Errorf("lab sensor %q: exit 0 (%q)", bad, out)
		}
	}
}
