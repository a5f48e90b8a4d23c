package vmsg

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/ooblab/ooblab/internal/testutil"
)

var nonce = []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}

var goldenTests = []struct {
	name string
	msg  Message
	want string
}{
	{"request start", &Request{ID: 7, Command: CmdStart, VM: "web1", Principal: "ops", IssuedMs: 1700000000000},
		"a5 01 07 02 04 03 64 77 65 62 31 07 63 6f 70 73 08 1b 00 00 01 8b cf e5 68 00"},
	{"request ping", &Request{ID: 1, Command: CmdPing}, "a2 01 01 02 01"},
	{"request metadata sorted", &Request{ID: 2, Command: CmdList, Metadata: map[string]string{"b": "2", "a": "1"}},
		"a3 01 02 02 02 06 a2 61 61 61 31 61 62 61 32"},
	{"reply", &Reply{RequestID: 7, OK: true, VMs: []VMState{{Name: "web1", State: "running", VCPUs: 1, MemoryKiB: 65536}}},
		"a3 01 07 02 f5 05 81 a4 01 64 77 65 62 31 02 67 72 75 6e 6e 69 6e 67 03 01 04 1a 00 01 00 00"},
	{"reply with every VM figure (keys 6-11 added later)", &Reply{RequestID: 7, OK: true, VMs: []VMState{{Name: "web1", State: "running",
		VCPUs: 2, MemoryKiB: 65536, UptimeSec: 90, Reason: "booted", CPUTimeMs: 1500, Autostart: true, Persistent: true,
		MaxMemKiB: 131072, UptimeSource: "qemu-process"}}},
		"a3 01 07 02 f5 05 81 ab 01 64 77 65 62 31 02 67 72 75 6e 6e 69 6e 67 03 02 04 1a 00 01 00 00 05 18 5a" +
			" 06 66 62 6f 6f 74 65 64 07 19 05 dc 08 f5 09 f5 0a 1a 00 02 00 00 0b 6c 71 65 6d 75 2d 70 72 6f 63 65 73 73"},
	{"history reply (keys 8-9 added later)", &Reply{RequestID: 3, OK: true,
		Executed: &Executed{Principal: "ops", Command: CmdHistory, Via: "oob-i", TimeMs: 1},
		History: []HistoryItem{{RequestID: 2, OK: true, State: "shut off", Executed: Executed{Principal: "ops", Command: CmdDestroy,
			VM: "web1", OOBAddr: "10.0.1.1:623", Metadata: map[string]string{"ticket": "42"}, Via: "vmm-i", TimeMs: 2}}}},
		"a4 01 03 02 f5 08 a4 01 63 6f 70 73 02 0a 07 65 6f 6f 62 2d 69 08 01" +
			" 09 81 a4 01 02 02 a7 01 63 6f 70 73 02 06 03 64 77 65 62 31 04 6c 31 30 2e 30 2e 31 2e 31 3a 36 32 33" +
			" 06 a1 66 74 69 63 6b 65 74 62 34 32 07 65 76 6d 6d 2d 69 08 02 03 f5 06 68 73 68 75 74 20 6f 66 66"},
	{"reply error", &Reply{RequestID: 9, Code: ErrDenied, Error: "no"}, "a3 01 09 03 02 04 62 6e 6f"},
	{"challenge", &Challenge{RequestID: 7, Nonce: nonce, ExpiresMs: 1000},
		"a3 01 07 02 50 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 03 19 03 e8"},
	{"alert", &Alert{TimeMs: 5, Host: "h1", Action: "destroy", Reason: "denied"},
		"a4 01 05 02 62 68 31 05 67 64 65 73 74 72 6f 79 06 66 64 65 6e 69 65 64"},
}

func TestGolden(t *testing.T) {
	for _, tt := range goldenTests {
		t.Run(tt.name, func(t *testing.T) {
			kind, got, err := Encode(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			if kind != tt.msg.Kind() {
				t.Fatalf("kind %v", kind)
			}
			if want := testutil.Unhex(t, tt.want); !bytes.Equal(got, want) {
				t.Fatalf("Encode = % x\nwant     % x", got, want)
			}
			back, err := Decode(kind, got)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, tt.msg) {
				t.Fatalf("Decode = %+v, want %+v", back, tt.msg)
			}
		})
	}
}

func TestFullRequestRoundTrip(t *testing.T) {
	r := &Request{ID: ^uint64(0), Command: CmdDestroy, VM: "db", OOBAddr: "10.0.0.2:623", VMMAddr: "192.0.2.1:8443",
		Metadata: map[string]string{"ticket": "42"}, Principal: "alice", IssuedMs: 1,
		Answer: &ChallengeAnswer{Nonce: nonce, Code: "12345678"}}
	b, err := EncodeRequest(r)
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeRequest(b)
	if err != nil || !reflect.DeepEqual(back, r) {
		t.Fatalf("%+v %v", back, err)
	}
	rep := &Reply{RequestID: 3, Code: ErrChallenge, Challenge: &Challenge{RequestID: 3, Nonce: nonce, VM: "db", Command: CmdDestroy},
		Host: &HostInfo{HostID: "h1", Hostname: "hv1", TimeMs: 9}}
	b, err = EncodeReply(rep)
	if err != nil {
		t.Fatal(err)
	}
	if back, err := DecodeReply(b); err != nil || !reflect.DeepEqual(back, rep) {
		t.Fatalf("%+v %v", back, err)
	}
}

var badBodies = []struct {
	name string
	kind Kind
	raw  string
	err  error
}{
	{"duplicate key", KindRequest, "a3 01 01 02 01 01 02", ErrDecode},
	{"indefinite map", KindAlert, "bf 01 05 ff", ErrDecode},
	{"tag", KindAlert, "c1 a1 01 05", ErrDecode},
	{"no command", KindRequest, "a1 01 01", ErrCommand},
	{"unknown command", KindRequest, "a2 01 01 02 18 63", ErrCommand},
	{"short nonce", KindChallenge, "a2 01 01 02 41 00", ErrInvalid},
	{"wrong type", KindReply, "a1 01 61 61", ErrDecode},
	{"truncated", KindRequest, "a5 01 07 02 04 03 64 77", ErrDecode},
	{"unknown kind", 9, "a0", ErrKind},
	{"deep nesting", KindRequest, "a1 06 a1 61 61 81 81 81 81 81 81 81 81 81 81 00", ErrDecode},
	{"invalid utf8", KindAlert, "a1 02 61 ff", ErrDecode},
}

func TestDecodeErrors(t *testing.T) {
	for _, tt := range badBodies {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Decode(tt.kind, testutil.Unhex(t, tt.raw))
			if !errors.Is(err, tt.err) || m != nil {
				t.Fatalf("Decode = %v, %v; want %v", m, err, tt.err)
			}
		})
	}
	if _, err := Decode(KindRequest, make([]byte, MaxBody+1)); !errors.Is(err, ErrDecode) {
		t.Fatal(err)
	}
	if _, _, err := Encode(&Request{ID: 1}); !errors.Is(err, ErrCommand) {
		t.Fatal(err)
	}
}

func TestCommands(t *testing.T) {
	for c := CmdPing; c <= CmdResume; c++ {
		got, err := ParseCommand(c.String())
		if err != nil || got != c {
			t.Fatalf("%v: %v %v", c, got, err)
		}
	}
	if _, err := ParseCommand("format"); !errors.Is(err, ErrCommand) {
		t.Fatal(err)
	}
	if CmdList.ChangesState() || !CmdReboot.ChangesState() {
		t.Fatal("ChangesState")
	}
}

func FuzzDecode(f *testing.F) {
	for _, tt := range goldenTests {
		f.Add(byte(tt.msg.Kind()), testutil.Unhex(f, tt.want))
	}
	for _, tt := range badBodies {
		f.Add(byte(tt.kind), testutil.Unhex(f, tt.raw))
	}
	f.Fuzz(func(t *testing.T, kind byte, b []byte) {
		m, err := Decode(Kind(kind), b)
		if err != nil {
			return
		}
		k, out, err := Encode(m)
		if err != nil || k != Kind(kind) {
			t.Fatalf("re-encode: %v %v", k, err)
		}
		m2, err := Decode(k, out)
		if err != nil {
			t.Fatalf("decode of re-encoding: %v", err)
		}
		_, out2, err := Encode(m2)
		if err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("encoding not stable: % x vs % x (%v)", out, out2, err)
		}
	})
}

func TestWriteCorpus(t *testing.T) {
	var seeds []seed
	for _, tt := range goldenTests {
		seeds = append(seeds, seed{byte(tt.msg.Kind()), testutil.Unhex(t, tt.want)})
	}
	for _, tt := range badBodies {
		seeds = append(seeds, seed{byte(tt.kind), testutil.Unhex(t, tt.raw)})
	}
	var args [][]any
	for _, s := range seeds {
		args = append(args, s.args())
	}
	testutil.WriteCorpus(t, "FuzzDecode", args...)
}
