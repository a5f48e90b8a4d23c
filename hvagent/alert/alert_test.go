package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var sample = Alert{
	Time:      time.Date(2026, 11, 25, 17, 0, 0, 0, time.UTC),
	Host:      "hv1",
	Principal: "mallory",
	VM:        "db-main",
	Action:    "destroy",
	Reason:    `unknown principal "mallory"`,
	RequestID: 42,
	Users:     []string{"alice", "bob"},
}

func TestHookWritesJSONAndEnv(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "alert.json")
	env := filepath.Join(dir, "alert.env")
	h := &Hook{
		Command: []string{"sh", "-c", `cat > "$OUT" && env | grep ^OOBLAB_ALERT_ | sort > "$ENVOUT"`},
		Env:     []string{"OUT=" + out, "ENVOUT=" + env},
		Timeout: 10 * time.Second,
	}
	if err := h.Send(context.Background(), sample); err != nil {
		t.Fatalf("Send: %v", err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var got Alert
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("stdin was not JSON: %v: %s", err, b)
	}
	if got.String() != sample.String() || !got.Time.Equal(sample.Time) || got.RequestID != 42 || len(got.Users) != 2 {
		t.Fatalf("hook got %+v", got)
	}
	e, err := os.ReadFile(env)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		"OOBLAB_ALERT_ACTION=destroy",
		"OOBLAB_ALERT_HOST=hv1",
		"OOBLAB_ALERT_PRINCIPAL=mallory",
		`OOBLAB_ALERT_REASON=unknown principal "mallory"`,
		"OOBLAB_ALERT_REQUEST_ID=42",
		"OOBLAB_ALERT_TIME=2026-11-25T17:00:00Z",
		"OOBLAB_ALERT_USERS=alice,bob",
		"OOBLAB_ALERT_VM=db-main",
	}, "\n") + "\n"
	if string(e) != want {
		t.Fatalf("env:\n%s\nwant:\n%s", e, want)
	}
}

func TestHookFailureIsReportedAndLogged(t *testing.T) {
	var logs bytes.Buffer
	h := &Hook{
		Command: []string{"sh", "-c", "echo boom >&2; exit 3"},
		Logger:  slog.New(slog.NewTextHandler(&logs, nil)),
	}
	err := h.Send(context.Background(), sample)
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(logs.String(), "alert hook failed") {
		t.Fatalf("not logged: %s", logs.String())
	}
}

func TestHookTimeoutKillsGroup(t *testing.T) {
	h := &Hook{
		// The grandchild sleep keeps the output pipe open: the whole
		// process group must go.
		Command: []string{"sh", "-c", "sleep 30 & sleep 30"},
		Timeout: 200 * time.Millisecond,
		Logger:  slog.New(slog.DiscardHandler),
	}
	start := time.Now()
	err := h.Send(context.Background(), sample)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("hook took %v despite a 200ms timeout", d)
	}
}

func TestLogSink(t *testing.T) {
	var logs bytes.Buffer
	if err := (Log{Logger: slog.New(slog.NewJSONHandler(&logs, nil))}).Send(context.Background(), sample); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{`"level":"WARN"`, `"principal":"mallory"`, `"vm":"db-main"`, `"request_id":42`} {
		if !strings.Contains(logs.String(), s) {
			t.Errorf("log lacks %s: %s", s, logs.String())
		}
	}
}

func TestMultiSendsToAllAndJoins(t *testing.T) {
	e1, e2 := errors.New("queue full"), errors.New("sel full")
	got := make(chan string, 3)
	m := Multi{
		SinkFunc(func(ctx context.Context, a Alert) error { got <- "a"; return e1 }),
		SinkFunc(func(ctx context.Context, a Alert) error { got <- "b"; return nil }),
		SinkFunc(func(ctx context.Context, a Alert) error { got <- "c"; return e2 }),
	}
	err := m.Send(context.Background(), sample)
	if !errors.Is(err, e1) || !errors.Is(err, e2) {
		t.Fatalf("err = %v", err)
	}
	if len(got) != 3 {
		t.Fatalf("%d sinks called, want 3", len(got))
	}
	if err := (Multi{Log{Logger: slog.New(slog.DiscardHandler)}}).Send(context.Background(), sample); err != nil {
		t.Fatalf("all ok: %v", err)
	}
}
