package queue

import (
	"testing"

	"github.com/ooblab/ooblab/internal/testutil"
)

// writeCorpus stores seeds as go-fuzz corpus files under testdata/fuzz/<name>
// when OOBLAB_UPDATE_CORPUS=1, so "go test -fuzz" starts from them too.
type seed struct {
	cmd  byte
	lan  bool
	data []byte
}

func TestWriteCorpus(t *testing.T) {
	var seeds []seed
	for _, tt := range wireTests {
		seeds = append(seeds, seed{byte(tt.cmd), tt.side == "lan", testutil.Unhex(t, tt.req)})
	}
	for _, s := range readForSeeds {
		seeds = append(seeds, seed{s.cmd, s.lan, testutil.Unhex(t, s.hex)})
	}
	var args [][]any
	for _, s := range seeds {
		args = append(args, []any{s.cmd, s.lan, s.data})
	}
	testutil.WriteCorpus(t, "FuzzHandlers", args...)
}
