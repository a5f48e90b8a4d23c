package queue

import (
	"testing"

	"github.com/ooblab/ooblab/internal/record"
)

// TestOnQueue2Write: the hook sees each record that lands in Queue 2 once;
// a duplicate (same message id and index) is not reported again.
func TestOnQueue2Write(t *testing.T) {
	var got []uint32
	qs, err := Open(Options{OnQueue2Write: func(r record.Record) { got = append(got, r.Requester) }})
	if err != nil {
		t.Fatal(err)
	}
	defer qs.Close()
	r := record.Record{Requester: 0x42, MsgID: 1, Count: 1, Payload: []byte("a")}
	for range 2 {
		if err := qs.Queue2().Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := qs.Queue1().Write(record.Record{MsgID: 2, Count: 1}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != 0x42 {
		t.Errorf("hook saw %v, want [0x42]", got)
	}
}
