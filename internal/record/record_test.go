package record

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/ooblab/ooblab/internal/testutil"
)

var recordTests = []struct {
	name string
	rec  Record
	want string
}{
	{"empty payload", Record{MsgID: 1, Index: 0, Count: 1}, "01 00 01 00 00 00 00 00 00 00 00 00 01 00"},
	{"flags and payload", Record{Flags: 0x80, MsgID: 0x0102030405060708, Index: 2, Count: 3, Payload: []byte("hi")},
		"01 80 08 07 06 05 04 03 02 01 02 00 03 00 68 69"},
	{"max index", Record{MsgID: ^uint64(0), Index: 0xfffe, Count: 0xffff, Payload: []byte{0xaa}},
		"01 00 ff ff ff ff ff ff ff ff fe ff ff ff aa"},
	{"addressed", Record{Requester: 0x0a0b0c0d, MsgID: 0x0102030405060708, Index: 1, Count: 2, Payload: []byte("ok")},
		"02 00 0d 0c 0b 0a 08 07 06 05 04 03 02 01 01 00 02 00 6f 6b"},
	{"addressed empty", Record{Flags: 1, Requester: 1, MsgID: 7, Count: 1},
		"02 01 01 00 00 00 07 00 00 00 00 00 00 00 00 00 01 00"},
}

func TestRecordRoundTrip(t *testing.T) {
	for _, tt := range recordTests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.rec.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if want := testutil.Unhex(t, tt.want); !bytes.Equal(got, want) {
				t.Fatalf("marshal = % x, want % x", got, want)
			}
			back, err := Parse(got)
			if err != nil {
				t.Fatal(err)
			}
			if back.Requester != tt.rec.Requester || back.Key() != tt.rec.Key() || back.Count != tt.rec.Count || back.Flags != tt.rec.Flags || !bytes.Equal(back.Payload, tt.rec.Payload) {
				t.Fatalf("parse = %v, want %v", back, tt.rec)
			}
		})
	}
}

var badRecords = []struct {
	name string
	raw  string
	err  error
}{
	{"short", "01 00 01", ErrShort},
	{"version", "03 00 01 00 00 00 00 00 00 00 00 00 01 00", ErrVersion},
	{"empty", "", ErrShort},
	{"v2 short", "02 00 01 00 00 00 01 00 00 00 00 00 00 00 00 00 01", ErrShort},
	{"v2 requester 0", "02 00 00 00 00 00 01 00 00 00 00 00 00 00 00 00 01 00", ErrRequester},
	{"v2 count zero", "02 00 05 00 00 00 01 00 00 00 00 00 00 00 00 00 00 00", ErrBadFragment},
	{"count zero", "01 00 01 00 00 00 00 00 00 00 00 00 00 00", ErrBadFragment},
	{"index >= count", "01 00 01 00 00 00 00 00 00 00 01 00 01 00", ErrBadFragment},
}

func TestParseErrors(t *testing.T) {
	for _, tt := range badRecords {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse(testutil.Unhex(t, tt.raw)); !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
		})
	}
	long := append(testutil.Unhex(t, "01 00 01 00 00 00 00 00 00 00 00 00 01 00"), make([]byte, MaxPayload+1)...)
	if _, err := Parse(long); !errors.Is(err, ErrPayloadLen) {
		t.Fatalf("long payload err = %v", err)
	}
	longV2 := append(testutil.Unhex(t, "02 00 05 00 00 00 01 00 00 00 00 00 00 00 00 00 01 00"), make([]byte, MaxPayloadV2+1)...)
	if _, err := Parse(longV2); !errors.Is(err, ErrPayloadLen) {
		t.Fatalf("long v2 payload err = %v", err)
	}
}

func TestFragmentFor(t *testing.T) {
	msg := make([]byte, 3*MaxPayloadV2+1)
	recs, err := FragmentFor(9, 42, msg)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 4 {
		t.Fatalf("%d records, want 4", len(recs))
	}
	r := NewReassembler(ReassemblerConfig{})
	for i, rec := range recs {
		b, err := rec.MarshalBinary()
		if err != nil || len(b) > MaxRecordLen {
			t.Fatalf("record %d: %d bytes, %v", i, len(b), err)
		}
		back, err := Parse(b)
		if err != nil || back.Requester != 9 {
			t.Fatalf("record %d: %v requester %d", i, err, back.Requester)
		}
		m, ok, err := r.Add(back, time.Unix(0, 0))
		if err != nil || ok != (i == 3) || (ok && len(m) != len(msg)) {
			t.Fatalf("record %d: ok=%v err=%v", i, ok, err)
		}
	}
	// Fragments of one message must agree on the requester.
	r.Add(Record{Requester: 1, MsgID: 5, Count: 2, Payload: []byte("a")}, time.Unix(0, 0))
	if _, _, err := r.Add(Record{Requester: 2, MsgID: 5, Index: 1, Count: 2, Payload: []byte("b")}, time.Unix(0, 0)); !errors.Is(err, ErrInconsistent) {
		t.Fatalf("requester mismatch: %v", err)
	}
}

func TestSizes(t *testing.T) {
	if MaxPayload != 223 || IANALen+HeaderLen+MaxPayload != 240 || IANALen+HeaderLenV2+MaxPayloadV2 != 240 {
		t.Fatalf("MaxPayload = %d", MaxPayload)
	}
}

func TestFragment(t *testing.T) {
	for _, n := range []int{0, 1, MaxPayload - 1, MaxPayload, MaxPayload + 1, 1000, 1 << 20} {
		msg := make([]byte, n)
		for i := range msg {
			msg[i] = byte(i * 7)
		}
		recs, err := Fragment(42, msg)
		if err != nil {
			t.Fatal(err)
		}
		want := max(1, (n+MaxPayload-1)/MaxPayload)
		if len(recs) != want {
			t.Fatalf("n=%d: %d records, want %d", n, len(recs), want)
		}
		// Shuffle, duplicate and reassemble.
		r := NewReassembler(ReassemblerConfig{MaxBytes: 2 << 20})
		order := rand.Perm(len(recs))
		var got []byte
		done := 0
		for _, i := range append(order, order[:len(order)/2]...) {
			b, err := recs[i].MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > MaxRecordLen {
				t.Fatalf("record %d bytes", len(b))
			}
			rec, _ := Parse(b)
			m, ok, err := r.Add(rec, time.Unix(0, 0))
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				done++
				got = m
			}
		}
		if done != 1 || !bytes.Equal(got, msg) {
			t.Fatalf("n=%d: delivered %d times, equal=%v", n, done, bytes.Equal(got, msg))
		}
		if m, b := r.InFlight(); m != 0 || b != 0 {
			t.Fatalf("in flight after completion: %d %d", m, b)
		}
	}
	if _, err := Fragment(1, make([]byte, MaxMessage+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversize: %v", err)
	}
}

func TestReassemblerInconsistent(t *testing.T) {
	r := NewReassembler(ReassemblerConfig{})
	now := time.Unix(100, 0)
	if _, _, err := r.Add(Record{MsgID: 1, Index: 0, Count: 3, Payload: []byte("a")}, now); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Add(Record{MsgID: 1, Index: 1, Count: 4, Payload: []byte("b")}, now); !errors.Is(err, ErrInconsistent) {
		t.Fatalf("count mismatch: %v", err)
	}
	if _, _, err := r.Add(Record{MsgID: 1, Index: 0, Count: 3, Payload: []byte("X")}, now); !errors.Is(err, ErrInconsistent) {
		t.Fatalf("payload mismatch: %v", err)
	}
	r.Add(Record{MsgID: 1, Index: 1, Count: 3, Payload: []byte("b")}, now)
	m, ok, err := r.Add(Record{MsgID: 1, Index: 2, Count: 3, Payload: []byte("c")}, now)
	if err != nil || !ok || string(m) != "abc" {
		t.Fatalf("got %q %v %v", m, ok, err)
	}
}

func TestReassemblerBounds(t *testing.T) {
	r := NewReassembler(ReassemblerConfig{MaxMessages: 2, MaxBytes: 3 * MaxPayload, TTL: time.Minute})
	t0 := time.Unix(1000, 0)
	p := make([]byte, MaxPayload)
	r.Add(Record{MsgID: 1, Count: 2, Payload: p}, t0)
	r.Add(Record{MsgID: 2, Count: 2, Payload: p}, t0.Add(time.Second))
	r.Add(Record{MsgID: 3, Count: 2, Payload: p}, t0.Add(2*time.Second)) // evicts 1
	if m, _ := r.InFlight(); m != 2 {
		t.Fatalf("in flight %d", m)
	}
	if _, ok, _ := r.Add(Record{MsgID: 1, Index: 1, Count: 2, Payload: p}, t0.Add(3*time.Second)); ok {
		t.Fatal("evicted message completed")
	}
	if _, _, err := r.Add(Record{MsgID: 9, Count: 4, Payload: p}, t0); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	// Expiry.
	r.Expire(t0.Add(time.Hour))
	if m, b := r.InFlight(); m != 0 || b != 0 {
		t.Fatalf("after expiry %d %d", m, b)
	}
	// Delivered ids forgotten after TTL: a late duplicate then starts afresh.
	r.Add(Record{MsgID: 5, Count: 1}, t0)
	if _, ok, _ := r.Add(Record{MsgID: 5, Count: 1}, t0.Add(time.Second)); ok {
		t.Fatal("duplicate delivered within TTL")
	}
}

func FuzzParse(f *testing.F) {
	for _, tt := range recordTests {
		f.Add(testutil.Unhex(f, tt.want))
	}
	for _, tt := range badRecords {
		f.Add(testutil.Unhex(f, tt.raw))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Parse(b)
		if err != nil {
			return
		}
		out, err := r.MarshalBinary()
		if err != nil {
			t.Fatalf("parsed record does not marshal: %v", err)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("round trip % x != % x", out, b)
		}
		ra := NewReassembler(ReassemblerConfig{MaxMessages: 4, MaxBytes: 1024})
		ra.Add(r, time.Unix(0, 0))
	})
}

func TestWriteCorpus(t *testing.T) {
	var seeds [][]byte
	for _, tt := range recordTests {
		seeds = append(seeds, testutil.Unhex(t, tt.want))
	}
	for _, tt := range badRecords {
		seeds = append(seeds, testutil.Unhex(t, tt.raw))
	}
	testutil.WriteCorpus(t, "FuzzParse", testutil.Seeds(seeds)...)
	testutil.WriteCorpus(t, "FuzzReassemble", testutil.Seeds(reassembleSeeds)...)
}

var reassembleSeeds = [][]byte{
	{0x00, 0x02, 3, 0x00, 0x12, 2, 0x00, 0x02, 3},                      // two fragments and a duplicate
	{0x10, 0x02, 200, 0x20, 0x02, 200, 0x30, 0x02, 200, 0x40, 0x02, 9}, // evictions
	{0x00, 0x03, 1, 0x00, 0x14, 1},                                     // inconsistent count
}

// FuzzReassemble interprets its input as a stream of small records
// (msg id 0-7, index/count 0-7, payload length 0-255) and checks the
// reassembler's bounds and exactly-once delivery.
func FuzzReassemble(f *testing.F) {
	for _, s := range reassembleSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg := ReassemblerConfig{MaxMessages: 3, MaxBytes: 600, TTL: 10 * time.Second}
		r := NewReassembler(cfg)
		now := time.Unix(0, 0)
		for len(b) >= 3 {
			id := uint64(b[0]>>4) & 7
			idx, cnt := uint16(b[1]>>4)&7, uint16(b[1])&7
			n := int(b[2])
			b = b[3:]
			// Payload is a function of (id, idx) so duplicates agree.
			p := bytes.Repeat([]byte{byte(id<<4) | byte(idx)}, n)
			now = now.Add(time.Duration(b0(b)) * time.Second / 4)
			msg, ok, err := r.Add(Record{MsgID: id, Index: idx, Count: cnt, Payload: p}, now)
			if ok && (err != nil || len(msg) > int(cnt)*255) {
				t.Fatalf("delivered %d bytes of %d fragments, err %v", len(msg), cnt, err)
			}
			m, by := r.InFlight()
			if m > cfg.MaxMessages || by > cfg.MaxBytes || by < 0 {
				t.Fatalf("bounds: %d messages %d bytes", m, by)
			}
		}
	})
}

func b0(b []byte) byte {
	if len(b) == 0 {
		return 0
	}
	return b[0] & 3
}
