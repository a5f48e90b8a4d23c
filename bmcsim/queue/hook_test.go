package queue

import (
	"testing"

	"github.com/ooblab/ooblab/internal/record"
)

// TestOnQueue2Write: the hook sees each record that lands in Queue 2 once,
// with the user that owns it, when its reader can already read it; a
// duplicate (same message id and index) is not reported again.
func TestOnQueue2Write(t *testing.T) {
	type seen struct {
		req      uint32
		owner    string
		readable bool
	}
	var got []seen
	var qs *Queues
	qs, err := Open(Options{OnQueue2Write: func(r record.Record, owner string) {
		rec, ok, err := qs.Queue2().ReadAs(owner, r.Requester, 0, nil)
		got = append(got, seen{r.Requester, owner, err == nil && ok && rec.Key() == r.Key()})
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer qs.Close()
	if err := qs.Queue2().Bind("vms", 0x42); err != nil {
		t.Fatal(err)
	}
	r := record.Record{Requester: 0x42, MsgID: 1, Count: 1, Payload: []byte("a")}
	for range 2 {
		if err := qs.Queue2().Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := qs.Queue1().Write(record.Record{MsgID: 2, Count: 1}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != (seen{0x42, "vms", true}) {
		t.Errorf("hook saw %+v, want one record for 0x42 owned by vms, readable", got)
	}
}
