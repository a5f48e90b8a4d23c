package seal

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// writeCorpus stores seeds as go-fuzz corpus files under testdata/fuzz/<name>
// when OOBLAB_UPDATE_CORPUS=1, so "go test -fuzz" starts from them too.
func writeCorpus(t *testing.T, name string, seeds [][]byte) {
	t.Helper()
	if os.Getenv("OOBLAB_UPDATE_CORPUS") != "1" {
		t.Skip("set OOBLAB_UPDATE_CORPUS=1 to rewrite testdata/fuzz")
	}
	dir := filepath.Join("testdata", "fuzz", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, s := range seeds {
		sum := sha256.Sum256(s)
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%x", sum[:8])), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
