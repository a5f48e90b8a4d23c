package journal

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// Results lists finished requests only, oldest first, across a reopen,
// and forgets those past the TTL.
func TestResults(t *testing.T) {
	now := time.Unix(1000, 0)
	opt := Options{TTL: time.Hour, Now: func() time.Time { return now }}
	path := filepath.Join(t.TempDir(), "j")
	j := open(t, path, opt)
	run(t, j, 7, "first")
	now = now.Add(time.Minute)
	run(t, j, 3, "second")
	if _, claimed, err := j.Begin(context.Background(), 9); err != nil || !claimed { // begun, not finished
		t.Fatal(err)
	}
	check := func(j *Journal, want ...string) {
		t.Helper()
		got := j.Results()
		if len(got) != len(want) {
			t.Fatalf("Results = %+v, want %v", got, want)
		}
		for i, r := range got {
			if string(r.Data) != want[i] {
				t.Fatalf("Results[%d] = %q, want %q", i, r.Data, want[i])
			}
		}
	}
	check(j, "first", "second")
	if r := j.Results(); r[0].ID != 7 || r[1].ID != 3 || !r[1].At.Equal(now) {
		t.Fatalf("ids/times %+v", r)
	}
	j.Close()
	j = open(t, path, opt)
	check(j, "first", "second")
	now = now.Add(time.Hour - 30*time.Second) // "first" is past the TTL, "second" not
	check(j, "second")
}
