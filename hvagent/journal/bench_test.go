package journal

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkStateChanges500PerSecond10Minutes journals 500 state changes a
// second for 10 minutes of simulated time (300,000 requests: a claim with
// its note, then a 332-byte result: the fingerprint and a start's reply)
// under the default 24 h retention, and reports what the journal holds
// and wrote: file bytes, records, the write rate in bytes per simulated
// second, and the ids remembered. fsync is skipped (faultFS.fastSync):
// the figures are sizes, not disk speed.
func BenchmarkStateChanges500PerSecond10Minutes(b *testing.B) {
	const (
		rate = 500
		span = 10 * time.Minute
		n    = rate * int(span/time.Second)
	)
	note := []byte("reboot web1\nvms1\nvmm-i")
	result := make([]byte, 332)
	for b.Loop() {
		wall := time.Unix(1_700_000_000, 0)
		var mono time.Duration
		j, err := OpenWith(filepath.Join(b.TempDir(), "journal"), Options{FS: &faultFS{fastSync: true},
			Now: func() time.Time { return wall }, Mono: func() time.Duration { return mono }})
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		for id := uint64(1); id <= uint64(n); id++ {
			if _, _, err := j.BeginNote(ctx, id, note); err != nil {
				b.Fatal(err)
			}
			if err := j.Put(id, result); err != nil {
				b.Fatal(err)
			}
			wall, mono = wall.Add(time.Second/rate), mono+time.Second/rate
		}
		st := j.Stats()
		j.Close()
		b.ReportMetric(float64(st.FileBytes), "file-bytes")
		b.ReportMetric(float64(st.Records), "records")
		b.ReportMetric(float64(st.Bytes)/span.Seconds(), "bytes-written/s")
		b.ReportMetric(float64(st.Records)/span.Seconds(), "records/s")
		b.ReportMetric(float64(st.IDs), "ids")
	}
}
