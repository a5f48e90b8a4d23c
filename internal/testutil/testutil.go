// Package testutil holds the helpers ooblab's tests share: hex tables, fuzz
// corpus files, a test logger, and the one rule for tests that need a part
// this machine may lack (skip here, fail under CI).
package testutil

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Unhex decodes "01 02 ab"-style hex (spaces and newlines ignored).
func Unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := decode(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// MustUnhex is Unhex for package-level tables; it panics on bad hex.
func MustUnhex(s string) []byte {
	b, err := decode(s)
	if err != nil {
		panic(fmt.Sprintf("bad hex %q: %v", s, err))
	}
	return b
}

func decode(s string) ([]byte, error) {
	return hex.DecodeString(strings.Join(strings.Fields(s), ""))
}

// Logger is the logger a test hands to the code under test: debug lines on
// stderr when OOBLAB_TEST_LOG is set, nothing otherwise.
func Logger(t testing.TB) *slog.Logger {
	if os.Getenv("OOBLAB_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

// InCI reports whether the tests run under CI (CI set, and not "false" or
// "0"): there a test that cannot run must fail, not skip.
func InCI() bool {
	v := os.Getenv("CI")
	return v != "" && v != "false" && v != "0"
}

// Need skips the test when err says this machine lacks what it needs, or
// fails it under CI, which must run every test.
func Need(t testing.TB, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if InCI() {
		t.Fatalf("CI must run this test: %v", err)
	}
	t.Skip(err)
}

// NeedTools is Need for programs on PATH.
func NeedTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			Need(t, fmt.Errorf("%s not installed (make deps installs it): %w", tool, err))
		}
	}
}

// WriteCorpus stores seeds as Go fuzz corpus files under
// testdata/fuzz/<name> when OOBLAB_UPDATE_CORPUS=1 (and skips otherwise),
// so "go test -fuzz" starts from them too. Each seed holds the fuzz
// function's arguments in order; []byte, string, byte and bool are supported.
func WriteCorpus(t *testing.T, name string, seeds ...[]any) {
	t.Helper()
	if os.Getenv("OOBLAB_UPDATE_CORPUS") != "1" {
		t.Skip("set OOBLAB_UPDATE_CORPUS=1 to rewrite testdata/fuzz")
	}
	dir := filepath.Join("testdata", "fuzz", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, args := range seeds {
		var body strings.Builder
		body.WriteString("go test fuzz v1\n")
		for _, a := range args {
			switch v := a.(type) {
			case []byte:
				fmt.Fprintf(&body, "[]byte(%q)\n", v)
			case string:
				fmt.Fprintf(&body, "string(%q)\n", v)
			case byte:
				fmt.Fprintf(&body, "byte(%q)\n", v)
			case bool:
				fmt.Fprintf(&body, "bool(%v)\n", v)
			default:
				t.Fatalf("WriteCorpus: argument of type %T", a)
			}
		}
		sum := sha256.Sum256([]byte(body.String()))
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%x", sum[:8])), []byte(body.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// Seeds turns single-argument seeds into WriteCorpus's form.
func Seeds(bs [][]byte) [][]any {
	out := make([][]any, len(bs))
	for i, b := range bs {
		out[i] = []any{b}
	}
	return out
}

// Hex formats b as Unhex reads it: "01 02 ab".
func Hex(b []byte) string {
	var sb strings.Builder
	for i, c := range b {
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString(hex.EncodeToString([]byte{c}))
	}
	return sb.String()
}

// Integration marks a test that drives real outside programs (ipmitool,
// FreeIPMI, QEMU, libvirtd): the quick tier (`make unit`, go test -short)
// skips it; otherwise the tools must be there (Need's rule).
func Integration(t testing.TB, tools ...string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("integration test (needs %s): skipped by -short", strings.Join(tools, ", "))
	}
	NeedTools(t, tools...)
}

// SyncBuffer is a bytes.Buffer that a process or goroutine writes while
// the test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Clock is a settable clock for code that takes a Now func.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock starts a Clock at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

func (c *Clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *Clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }
func (c *Clock) Set(t time.Time)     { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// WaitFor polls cond until it holds, failing the test with "timed out
// waiting for what" after within. Give a budget for a loaded machine: it
// costs nothing when cond comes true early.
func WaitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Context is a context that ends after d or when the test ends, whichever
// comes first: the deadline for one test's blocking calls.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Serve runs serve in a goroutine for the rest of the test. At cleanup it
// cancels serve's context, waits for serve to return and fails the test if
// it returned an error ("what: err"). It returns serve's context.
func Serve(t testing.TB, what string, serve func(context.Context) error) context.Context {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: %v", what, err)
		}
	})
	return ctx
}
