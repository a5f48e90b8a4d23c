package queue

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// writeCorpus stores seeds as go-fuzz corpus files under testdata/fuzz/<name>
// when OOBLAB_UPDATE_CORPUS=1, so "go test -fuzz" starts from them too.
func writeCorpus(t *testing.T, name string, seeds []seed) {
	t.Helper()
	if os.Getenv("OOBLAB_UPDATE_CORPUS") != "1" {
		t.Skip("set OOBLAB_UPDATE_CORPUS=1 to rewrite testdata/fuzz")
	}
	dir := filepath.Join("testdata", "fuzz", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, s := range seeds {
		sum := sha256.Sum256(append([]byte{s.cmd, fmt.Sprint(s.lan)[0]}, s.data...))
		body := fmt.Sprintf("go test fuzz v1\nbyte(%q)\nbool(%v)\n[]byte(%q)\n", s.cmd, s.lan, s.data)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%x", sum[:8])), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

type seed struct {
	cmd  byte
	lan  bool
	data []byte
}

func TestWriteCorpus(t *testing.T) {
	var seeds []seed
	for _, tt := range wireTests {
		seeds = append(seeds, seed{byte(tt.cmd), tt.side == "lan", unhex(t, tt.req)})
	}
	for _, s := range readForSeeds {
		seeds = append(seeds, seed{s.cmd, s.lan, unhex(t, s.hex)})
	}
	writeCorpus(t, "FuzzHandlers", seeds)
}
