package cmd

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestWaitUntil(t *testing.T) {
	calls := 0
	err := waitUntil(context.Background(), time.Minute, time.Millisecond, "never", func(ctx context.Context) (bool, error) {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("cond's context has no deadline")
		}
		calls++
		return calls == 3, nil
	})
	if err != nil || calls != 3 {
		t.Errorf("holds on the third call: %v after %d calls", err, calls)
	}

	busy := errors.New("channel busy")
	err = waitUntil(context.Background(), 20*time.Millisecond, time.Millisecond, "no alert for web1", func(context.Context) (bool, error) {
		return false, busy
	})
	if !errors.Is(err, busy) || !strings.HasPrefix(err.Error(), "no alert for web1 within 20ms (last: channel busy") {
		t.Errorf("past the deadline: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	err = waitUntil(ctx, time.Minute, time.Millisecond, "no alert for web1", func(context.Context) (bool, error) {
		cancel() // Ctrl-C during the wait
		return false, busy
	})
	if !errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "web1") {
		t.Errorf("interrupted: %v, want the context's error alone", err)
	}
}
