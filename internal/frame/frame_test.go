package frame

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"testing"

	"github.com/ooblab/ooblab/internal/testutil"
)

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	if err := Write(&buf, []byte{0x4f, 0x42, 0x01}); err != nil {
		t.Fatal(err)
	}
	if got, want := hex.EncodeToString(buf.Bytes()), "000000034f4201"; got != want {
		t.Fatalf("wire %s, want %s", got, want)
	}
	b, err := Read(&buf)
	if err != nil || !bytes.Equal(b, []byte{0x4f, 0x42, 0x01}) {
		t.Fatalf("read %x, %v", b, err)
	}
	if _, err := Read(&buf); !errors.Is(err, io.EOF) {
		t.Fatalf("end: %v, want EOF", err)
	}
}

var bad = []struct {
	name, raw string
	want      error
}{
	{"zero length", "00 00 00 00", ErrTooLarge},
	{"too long", "7f ff ff ff", ErrTooLarge},
	{"truncated body", "00 00 00 05 01 02", io.ErrUnexpectedEOF},
	{"truncated header", "00 00", io.ErrUnexpectedEOF},
}

func TestBad(t *testing.T) {
	for _, tc := range bad {
		if _, err := Read(bytes.NewReader(testutil.MustUnhex(tc.raw))); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if err := Write(io.Discard, nil); !errors.Is(err, ErrTooLarge) {
		t.Errorf("empty write: %v", err)
	}
}

func FuzzRead(f *testing.F) {
	for _, tc := range bad {
		f.Add(testutil.MustUnhex(tc.raw))
	}
	f.Add(testutil.MustUnhex("00 00 00 03 4f 42 01"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		b, err := Read(bytes.NewReader(raw))
		if err != nil {
			return
		}
		var buf bytes.Buffer
		if err := Write(&buf, b); err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(raw, buf.Bytes()) {
			t.Fatalf("re-encoding differs")
		}
	})
}
