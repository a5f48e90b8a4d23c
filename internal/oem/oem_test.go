package oem

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/ooblab/ooblab/internal/record"
	"github.com/ooblab/ooblab/internal/testutil"
)

type packer interface {
	Pack() ([]byte, error)
	Unpack([]byte) error
}

var rec = record.Record{MsgID: 0x1122334455667788, Index: 1, Count: 2, Payload: []byte{0xca, 0xfe}}

const recHex = "01 00 88 77 66 55 44 33 22 11 01 00 02 00 ca fe"

var codecTests = []struct {
	name  string
	msg   packer
	fresh func() packer
	want  string
}{
	{"write request", &WriteQueueRequest{IANA: DefaultIANA, Record: rec}, func() packer { return &WriteQueueRequest{} },
		"d9 7e 00 " + recHex},
	{"write response", &WriteQueueResponse{IANA: DefaultIANA}, func() packer { return &WriteQueueResponse{} }, "d9 7e 00"},
	{"read request no ack", &ReadQueueRequest{IANA: DefaultIANA}, func() packer { return &ReadQueueRequest{} }, "d9 7e 00"},
	{"read request ack", &ReadQueueRequest{IANA: 0x123456, Ack: &Ack{MsgID: 0x0102030405060708, Index: 0x0a0b}},
		func() packer { return &ReadQueueRequest{} }, "56 34 12 08 07 06 05 04 03 02 01 0b 0a"},
	{"read response record", &ReadQueueResponse{IANA: DefaultIANA, Record: rec}, func() packer { return &ReadQueueResponse{} },
		"d9 7e 00 00 " + recHex},
	{"read response empty", &ReadQueueResponse{IANA: DefaultIANA, Empty: true}, func() packer { return &ReadQueueResponse{} },
		"d9 7e 00 01"},
	{"read-for request", &ReadQueue2ForRequest{IANA: DefaultIANA, Reader: 0x0a0b0c0d},
		func() packer { return &ReadQueue2ForRequest{} }, "d9 7e 00 0d 0c 0b 0a 00"},
	{"read-for request alert log ack", &ReadQueue2ForRequest{IANA: DefaultIANA, Reader: 1, Flags: ReadAlertLog, Ack: &Ack{MsgID: 0x0102030405060708, Index: 3}},
		func() packer { return &ReadQueue2ForRequest{} }, "d9 7e 00 01 00 00 00 01 08 07 06 05 04 03 02 01 03 00"},
	{"read-for request durable follower", &ReadQueue2ForRequest{IANA: DefaultIANA, Reader: 7, Flags: ReadAlertLog | ReadDurable},
		func() packer { return &ReadQueue2ForRequest{} }, "d9 7e 00 07 00 00 00 03"},
	{"read response addressed record", &ReadQueueResponse{IANA: DefaultIANA, Record: record.Record{Requester: 5, MsgID: 9, Count: 1, Payload: []byte{1}}},
		func() packer { return &ReadQueueResponse{} }, "d9 7e 00 00 02 00 05 00 00 00 09 00 00 00 00 00 00 00 00 00 01 00 01"},
	{"window read", &ReadQueue1WindowRequest{IANA: DefaultIANA},
		func() packer { return &ReadQueue1WindowRequest{} }, "d9 7e 00 00"},
	{"window read rewind ack", &ReadQueue1WindowRequest{IANA: DefaultIANA, Flags: WindowRewind, Ack: &Ack{MsgID: 0x0102030405060708, Index: 2}},
		func() packer { return &ReadQueue1WindowRequest{} }, "d9 7e 00 01 08 07 06 05 04 03 02 01 02 00"},
	{"status request", &GetQueueStatusRequest{IANA: DefaultIANA}, func() packer { return &GetQueueStatusRequest{} }, "d9 7e 00"},
	{"status response", &GetQueueStatusResponse{IANA: DefaultIANA,
		Queue1: QueueStatus{Depth: 3, Capacity: 256, OldestAge: 1500 * time.Millisecond},
		Queue2: QueueStatus{Depth: 0, Capacity: 0x1234}},
		func() packer { return &GetQueueStatusResponse{} },
		"d9 7e 00 03 00 00 01 dc 05 00 00 00 00 34 12 00 00 00 00"},
}

func TestCodec(t *testing.T) {
	for _, tt := range codecTests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.msg.Pack()
			if err != nil {
				t.Fatal(err)
			}
			if want := testutil.Unhex(t, tt.want); !bytes.Equal(got, want) {
				t.Fatalf("Pack = % x\nwant   % x", got, want)
			}
			back := tt.fresh()
			if err := back.Unpack(got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, tt.msg) {
				t.Fatalf("Unpack = %+v, want %+v", back, tt.msg)
			}
		})
	}
}

var badTests = []struct {
	name  string
	fresh func() packer
	raw   string
	err   error
}{
	{"write short", func() packer { return &WriteQueueRequest{} }, "d9 7e", ErrShort},
	{"write bad record", func() packer { return &WriteQueueRequest{} }, "d9 7e 00 02", record.ErrShort},
	{"read ack short", func() packer { return &ReadQueueRequest{} }, "d9 7e 00 01 02 03", ErrLength},
	{"read resp no status", func() packer { return &ReadQueueResponse{} }, "d9 7e 00", ErrShort},
	{"read resp bad status", func() packer { return &ReadQueueResponse{} }, "d9 7e 00 07", ErrBadStatus},
	{"read resp empty trailing", func() packer { return &ReadQueueResponse{} }, "d9 7e 00 01 00", ErrLength},
	{"read-for short", func() packer { return &ReadQueue2ForRequest{} }, "d9 7e 00 01 00 00", ErrLength},
	{"read-for reader 0", func() packer { return &ReadQueue2ForRequest{} }, "d9 7e 00 00 00 00 00 01", ErrReader},
	{"read-for durable without alert log", func() packer { return &ReadQueue2ForRequest{} }, "d9 7e 00 01 00 00 00 02", ErrReader},
	{"read-for reserved flag", func() packer { return &ReadQueue2ForRequest{} }, "d9 7e 00 01 00 00 00 05", ErrReader},
	{"read-for ack short", func() packer { return &ReadQueue2ForRequest{} }, "d9 7e 00 01 00 00 00 00 01 02", ErrLength},
	{"window no flags", func() packer { return &ReadQueue1WindowRequest{} }, "d9 7e 00", ErrLength},
	{"window reserved flag", func() packer { return &ReadQueue1WindowRequest{} }, "d9 7e 00 02", ErrReader},
	{"window ack short", func() packer { return &ReadQueue1WindowRequest{} }, "d9 7e 00 00 01 02 03", ErrLength},
	{"status resp short", func() packer { return &GetQueueStatusResponse{} }, "d9 7e 00 03 00", ErrLength},
	{"status req trailing", func() packer { return &GetQueueStatusRequest{} }, "d9 7e 00 00", ErrLength},
}

func TestUnpackErrors(t *testing.T) {
	for _, tt := range badTests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.fresh().Unpack(testutil.Unhex(t, tt.raw)); !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
		})
	}
}

func TestErrorAs(t *testing.T) {
	err := fmt.Errorf("send: %w", Check(CmdWriteQueue1, CCOutOfSpace))
	var e *Error
	if !errors.As(err, &e) || e.Code != CCOutOfSpace || e.Cmd != CmdWriteQueue1 {
		t.Fatalf("errors.As: %v", err)
	}
	if Check(CmdReadQueue2, CCOK) != nil {
		t.Fatal("CCOK is an error")
	}
	for _, s := range []fmt.Stringer{NetFnOEMGroupRequest, NetFnOEMGroupResponse, NetFn(0x30), CmdGetQueueStatus, CmdReadQueue2For, CmdReadQueue1Win, Cmd(9), CCNotSupportedInState, CompletionCode(0x85)} {
		if s.String() == "" {
			t.Fatal("empty String")
		}
	}
	if !errors.Is(CheckIANA(1, 2), ErrIANA) || CheckIANA(DefaultIANA, DefaultIANA) != nil {
		t.Fatal("CheckIANA")
	}
}

func TestMaxRecordFitsKCS(t *testing.T) {
	r := WriteQueueRequest{IANA: DefaultIANA, Record: record.Record{Count: 1, Payload: make([]byte, record.MaxPayload)}}
	b, err := r.Pack()
	if err != nil || len(b) != record.MaxRequestData {
		t.Fatalf("len %d err %v", len(b), err)
	}
}

// FuzzUnpack feeds every decoder the same bytes; whatever decodes must
// re-encode to the same bytes.
func FuzzUnpack(f *testing.F) {
	for _, tt := range codecTests {
		f.Add(testutil.Unhex(f, tt.want))
	}
	for _, tt := range badTests {
		f.Add(testutil.Unhex(f, tt.raw))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, p := range []packer{&WriteQueueRequest{}, &WriteQueueResponse{}, &ReadQueueRequest{}, &ReadQueue2ForRequest{}, &ReadQueue1WindowRequest{}, &ReadQueueResponse{}, &GetQueueStatusRequest{}} {
			if p.Unpack(b) != nil {
				continue
			}
			out, err := p.Pack()
			if err != nil {
				t.Fatalf("%T: repack: %v", p, err)
			}
			if !bytes.Equal(out, b) {
				t.Fatalf("%T: % x -> % x", p, b, out)
			}
			if r, ok := p.(*ReadQueue2ForRequest); ok && r.Flags&ReadDurable != 0 && r.Flags&ReadAlertLog == 0 {
				t.Fatalf("durable command reader decoded: % x", b)
			}
		}
		var s GetQueueStatusResponse
		if s.Unpack(b) == nil {
			out, _ := s.Pack()
			if !bytes.Equal(out, b) {
				t.Fatalf("status: % x -> % x", b, out)
			}
		}
	})
}

func TestWriteCorpus(t *testing.T) {
	var seeds [][]byte
	for _, tt := range codecTests {
		seeds = append(seeds, testutil.Unhex(t, tt.want))
	}
	for _, tt := range badTests {
		seeds = append(seeds, testutil.Unhex(t, tt.raw))
	}
	testutil.WriteCorpus(t, "FuzzUnpack", testutil.Seeds(seeds)...)
}

func TestQueue1Notify(t *testing.T) {
	n := Queue1Notify{IANA: DefaultIANA, Depth: 0x0102}
	if got := fmt.Sprintf("% x", n.Pack()); got != "d9 7e 00 02 01" {
		t.Fatalf("pack = %s", got)
	}
	var m Queue1Notify
	if err := m.Unpack(n.Pack()); err != nil || m != n {
		t.Fatalf("unpack = %+v, %v", m, err)
	}
	if err := m.Unpack([]byte{0xd9, 0x7e}); err == nil {
		t.Fatal("short notify accepted")
	}
}
