package record

import (
	"fmt"
	"testing"
)

func TestDroppedMarker(t *testing.T) {
	m := NewDroppedMarker(0x0102030405060708, 57)
	b, err := m.AppendBinary(nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "01 01 08 07 06 05 04 03 02 01 00 00 01 00 39 00 00 00"; fmt.Sprintf("% x", b) != want {
		t.Fatalf("marker % x, want %s", b, want)
	}
	r, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if n, ok, err := DroppedMarker(r); n != 57 || !ok || err != nil {
		t.Fatalf("DroppedMarker = %d %v %v", n, ok, err)
	}
	if _, ok, _ := DroppedMarker(Record{MsgID: 1, Count: 1}); ok {
		t.Fatal("a plain record is a marker")
	}
	if _, ok, err := DroppedMarker(Record{Flags: FlagDropped, MsgID: 1, Count: 2, Payload: []byte{1, 0, 0, 0}}); !ok || err == nil {
		t.Fatal("a two-fragment marker accepted")
	}
}

func FuzzDroppedMarker(f *testing.F) {
	b, _ := NewDroppedMarker(7, 3).AppendBinary(nil)
	f.Add(b)
	f.Add([]byte{1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0})
	// Reserved flag bits set (fresh-clone CI's fuzz tier found it): still
	// a marker, and it re-encodes without them.
	f.Add([]byte{1, 0x31, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0x30, 0, 0, 1, 0, 0x30, 0x30, 0x30, 0x30})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Parse(b)
		if err != nil {
			return
		}
		if n, ok, err := DroppedMarker(r); ok && err == nil {
			again, _ := NewDroppedMarker(r.MsgID, n).AppendBinary(nil)
			// Receivers ignore the reserved flag bits (package doc): the
			// marker is the same without them.
			want := append([]byte(nil), b...)
			want[1] &= FlagDropped
			if string(again) != string(want) {
				t.Fatalf("marker % x re-encodes as % x", b, again)
			}
		}
	})
}
