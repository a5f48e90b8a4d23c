package cmd

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/spf13/pflag"
)

func TestFanOutBounded(t *testing.T) {
	for _, tt := range []struct{ n, parallel, want int }{
		{n: 100, parallel: 7, want: 7},
		{n: 3, parallel: 64, want: 3},
		{n: 200, parallel: 0, want: DefaultParallel}, // unset: the default
	} {
		f := fanOut{parallel: tt.parallel, progress: "never"}
		var inFlight, peak atomic.Int64
		calls := make([]int, tt.n)
		var mu sync.Mutex
		// Every call waits until the bound is reached (or all calls
		// started), so the peak shows the bound itself, not scheduling luck.
		full := make(chan struct{})
		var once sync.Once
		f.run(context.Background(), &bytes.Buffer{}, tt.n, "ping", func(ctx context.Context, i int) {
			v := inFlight.Add(1)
			for {
				p := peak.Load()
				if v <= p || peak.CompareAndSwap(p, v) {
					break
				}
			}
			if v == int64(tt.want) {
				once.Do(func() { close(full) })
			}
			<-full
			mu.Lock()
			calls[i]++
			mu.Unlock()
			inFlight.Add(-1)
		})
		if got := peak.Load(); got != int64(tt.want) {
			t.Errorf("n=%d parallel=%d: peak %d calls at once, want %d", tt.n, tt.parallel, got, tt.want)
		}
		for i, c := range calls {
			if c != 1 {
				t.Fatalf("n=%d: index %d called %d times", tt.n, i, c)
			}
		}
	}
}

func TestFanOutCancelledStillVisitsAll(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	f := fanOut{parallel: 4, progress: "never"}
	var errs atomic.Int64
	f.run(ctx, &bytes.Buffer{}, 50, "ping", func(ctx context.Context, i int) {
		if ctx.Err() != nil {
			errs.Add(1)
		}
	})
	if errs.Load() != 50 {
		t.Fatalf("%d calls saw the cancelled context, want 50", errs.Load())
	}
}

func TestFanOutProgress(t *testing.T) {
	for _, tt := range []struct {
		progress string
		n        int
		drawn    bool
	}{
		{"always", 30, true},
		{"always", 2, true},
		{"auto", 30, false}, // a buffer is no terminal
		{"never", 30, false},
		{"", 30, false}, // commands without the flag (watch)
	} {
		var buf bytes.Buffer
		f := fanOut{parallel: 4, progress: tt.progress}
		f.run(context.Background(), &buf, tt.n, "ping", func(context.Context, int) {})
		if got := strings.Contains(buf.String(), "ping"); got != tt.drawn {
			t.Errorf("--progress %q n=%d: bar drawn %v, want %v (stderr %q)", tt.progress, tt.n, got, tt.drawn, buf.String())
		}
	}
}

func TestFanOutFlags(t *testing.T) {
	var f fanOut
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	fs.SetOutput(&bytes.Buffer{})
	f.addFlags(fs)
	if f.parallel != DefaultParallel || f.progress != "auto" {
		t.Fatalf("defaults %+v", f)
	}
	if err := fs.Parse([]string{"--parallel", "8", "--progress", "never"}); err != nil {
		t.Fatal(err)
	}
	if f.parallel != 8 || f.progress != "never" {
		t.Fatalf("parsed %+v", f)
	}
	if err := fs.Parse([]string{"--progress", "sometimes"}); err == nil {
		t.Fatal("--progress sometimes accepted")
	}
}

func TestListAllHosts(t *testing.T) {
	r := newRig(t)
	code, out, errs := r.run(t, "--timeout", "300ms", "vm", "list", "--parallel", "1")
	if code != ExitUnreachable { // the rig's host "dead" never answers
		t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, ExitUnreachable, out, errs)
	}
	for _, want := range []string{"h1    web1", "h1    db1", "dead  -", "2 VM(s) on 1 of 2 host(s)"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = r.run(t, "-o", "json", "vm", "list", "h1")
	if code != ExitOK || !strings.Contains(out, `"web1"`) {
		t.Errorf("one host: exit %d\n%s", code, out)
	}
}
