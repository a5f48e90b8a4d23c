package agent

import (
	"strings"
	"testing"
)

func TestLogMetadata(t *testing.T) {
	long := strings.Repeat("ab", 8192) // 16 KB, as bench/lab's large request
	tests := []struct {
		name string
		in   map[string]string
		want map[string]string
	}{
		{"nil", nil, nil},
		{"short values whole", map[string]string{"ticket": "OPS-1", "why": strings.Repeat("x", logMetaValue)},
			map[string]string{"ticket": "OPS-1", "why": strings.Repeat("x", logMetaValue)}},
		{"long value cut", map[string]string{"ticket": "OPS-1", "blob": long},
			map[string]string{"ticket": "OPS-1", "blob": strings.Repeat("ab", logMetaValue/4) + "… (16384 bytes)"}},
		{"cut inside a rune", map[string]string{"s": "a" + strings.Repeat("é", logMetaValue)}, // byte 32 is half an é
			map[string]string{"s": "a" + strings.Repeat("é", logMetaValue/4-1) + "… (129 bytes)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := map[string]string{}
			for k, v := range tt.in {
				in[k] = v
			}
			got := logMetadata(tt.in)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d keys, want %d", len(got), len(tt.want))
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s: got %q, want %q", k, got[k], v)
				}
			}
			for k, v := range in {
				if tt.in[k] != v {
					t.Errorf("the request's metadata was changed: %s", k)
				}
			}
		})
	}
}
