package bmc

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"io"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	ipmibmc "github.com/bougou/go-ipmi/pkg/bmc"
	"github.com/bougou/go-ipmi/pkg/handlers"
	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ooblab/ooblab/bmcsim/sensors"
	"github.com/ooblab/ooblab/internal/testutil"
)

// offlineBMC is a BMC whose handlers are called directly, as over the
// system interface (full privilege), with a fixed sensor clock.
func offlineBMC(t testing.TB) (*BMC, *time.Time) {
	t.Helper()
	b, err := New(testConfig(), slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	b.Sensors().SetClock(func() time.Time { return now })
	return b, &now
}

func (b *BMC) call(netfn types.NetFn, cmd uint8, req []byte) ([]byte, types.CompletionCode) {
	hctx := &handlers.HandlerContext{BMC: b.IPMI, Channel: &ipmibmc.Channel{Number: 0x0F, Medium: ipmibmc.ChannelMediumSystemIF}}
	resp, cc, _ := b.Registry.Dispatch(context.Background(), hctx, uint8(netfn), cmd, req)
	return resp, cc
}

func hexOf(b []byte) string {
	s := hex.EncodeToString(b)
	var out []string
	for i := 0; i < len(s); i += 2 {
		out = append(out, s[i:i+2])
	}
	return strings.Join(out, " ")
}

// codeCase is one request to a command and the completion code and
// response it wants.
type codeCase struct {
	name string
	cmd  uint8
	req  string
	cc   types.CompletionCode
	want string // the whole response; "" checks the code alone
}

// runCodeCases sends each case's request to netfn's command, in order,
// as a subtest.
func runCodeCases(t *testing.T, b *BMC, netfn types.NetFn, cases []codeCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, cc := b.call(netfn, tc.cmd, testutil.MustUnhex(tc.req))
			if cc != tc.cc {
				t.Fatalf("cc %v, want %v", cc, tc.cc)
			}
			if tc.want != "" && hexOf(resp) != tc.want {
				t.Errorf("response\n got %s\nwant %s", hexOf(resp), tc.want)
			}
		})
	}
}

// TestGetSDRCodes: the completion codes of Get SDR (§33.12) for bad
// requests, and reads of any size.
func TestGetSDRCodes(t *testing.T) {
	b, _ := offlineBMC(t)
	st := types.NetFnStorageRequest
	resv, cc := b.call(st, 0x22, nil)
	if cc != types.CodeOK || hexOf(resv) != "01 00" {
		t.Fatalf("Reserve SDR: % x %v", resv, cc)
	}
	cpu := sensors.Records()[0] // record 2
	for _, tc := range []struct {
		name, req string
		cc        types.CompletionCode
		want      string // the response's start
		whole     bool   // want is the whole response
	}{
		{"header without reservation", "00 00 02 00 00 05", types.CodeOK, "03 00 " + hexOf(cpu[:5]), true},
		{"whole record (FFh)", "01 00 02 00 00 ff", types.CodeOK, "03 00 " + hexOf(cpu), true},
		{"a size past the end returns the rest", "01 00 02 00 30 40", types.CodeOK, "03 00 " + hexOf(cpu[0x30:]), true},
		{"a read of 60 bytes", "01 00 02 00 00 3c", types.CodeOK, "03 00 " + hexOf(cpu[:min(60, len(cpu))]), true},
		{"first record (0000h)", "00 00 00 00 00 05", types.CodeOK, "02 00", false},
		{"last record (FFFFh) has no next", "00 00 ff ff 00 02", types.CodeOK, "ff ff 08 00", true},
		{"partial read without reservation", "00 00 02 00 05 10", types.CodeReservationCanceled, "", false},
		{"stale reservation", "07 00 02 00 05 10", types.CodeReservationCanceled, "", false},
		{"stale reservation at offset 0", "07 00 02 00 00 05", types.CodeReservationCanceled, "", false},
		{"offset past the record", "01 00 02 00 ff 01", types.CodeParameterOutOfRange, "", false},
		{"no such record", "01 00 09 00 00 05", types.CodeRequestedDataNotPresent, "", false},
		{"truncated", "01 00 02 00 00", types.CodeRequestDataTruncated, "", false},
		{"too long", "01 00 02 00 00 05 00", types.CodeRequestDataLengthInvalid, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, cc := b.call(st, 0x23, testutil.MustUnhex(tc.req))
			if cc != tc.cc {
				t.Fatalf("cc %v, want %v", cc, tc.cc)
			}
			if !strings.HasPrefix(hexOf(resp), tc.want) || tc.whole && hexOf(resp) != tc.want {
				t.Errorf("response\n got %s\nwant %s", hexOf(resp), tc.want)
			}
		})
	}
	// A new reservation cancels the old one.
	b.call(st, 0x22, nil)
	if _, cc := b.call(st, 0x23, testutil.MustUnhex("01 00 02 00 05 10")); cc != types.CodeReservationCanceled {
		t.Errorf("old reservation after a new one: %v, want C5h", cc)
	}
}

// TestSensorCommandCodes: the sensor commands on known and unknown sensors.
func TestSensorCommandCodes(t *testing.T) {
	b, _ := offlineBMC(t)
	se := types.NetFnSensorEventRequest
	runCodeCases(t, b, se, []codeCase{
		{"reading of Inlet Temp", 0x2D, "02", types.CodeOK, "80 c0 c0 80"},
		{"reading of Host Power (on)", 0x2D, "07", types.CodeOK, "00 c0 01 80"},
		{"reading of an unknown sensor", 0x2D, "09", types.CodeRequestedDataNotPresent, ""},
		{"reading of sensor 0", 0x2D, "00", types.CodeRequestedDataNotPresent, ""},
		{"reading without a sensor", 0x2D, "", types.CodeRequestDataTruncated, ""},
		{"thresholds of Inlet Temp", 0x27, "02", types.CodeOK, "3b 64 5a 00 a0 aa b4"},
		{"thresholds of Host Power", 0x27, "07", types.CodeIllegalCommand, ""},
		{"thresholds of an unknown sensor", 0x27, "20", types.CodeRequestedDataNotPresent, ""},
		{"hysteresis of Inlet Temp", 0x25, "02 ff", types.CodeOK, "04 04"},
		{"factors of Inlet Temp", 0x23, "02 80", types.CodeOK, "ff 05 00 d8 c0 00 f1"},
		{"factors of 12V Rail", 0x23, "06 00", types.CodeOK, "ff 07 00 00 00 00 e0"},
		{"factors of an unknown sensor", 0x23, "99 00", types.CodeRequestedDataNotPresent, ""},
		{"event enable of CPU Temp", 0x29, "01", types.CodeOK, "c0 80 0a 80 0a"},
		{"event status of CPU Temp", 0x2B, "01", types.CodeOK, "c0 00 00 00 00"},
		{"sensor type of Fan 1", 0x2F, "03", types.CodeOK, "04 01"},
		{"sensor type of Host Power", 0x2F, "07", types.CodeOK, "22 6f"},
	})
}

// FuzzSDRHandlers sends arbitrary request data to the SDR, sensor and
// DCMI commands.
func FuzzSDRHandlers(f *testing.F) {
	for _, seed := range []struct {
		netfn, cmd byte
		req        string
	}{
		{0x0A, 0x23, "01 00 02 00 00 ff"}, {0x0A, 0x23, "01 00 ff ff 30 40"}, {0x0A, 0x22, ""}, {0x0A, 0x20, ""},
		{0x04, 0x2D, "02"}, {0x04, 0x27, "01"}, {0x04, 0x23, "06 00"}, {0x04, 0x2B, "07"}, {0x04, 0x25, "02 ff"},
		{0x2C, 0x01, "dc 01"}, {0x2C, 0x02, "dc 01 00 00"}, {0x2C, 0x07, "dc 01 40 00 00"}, {0x2C, 0x10, "dc 01 41 00 00"},
	} {
		f.Add(seed.netfn, seed.cmd, testutil.MustUnhex(seed.req))
	}
	b, _ := offlineBMC(f)
	f.Fuzz(func(t *testing.T, netfn, cmd byte, data []byte) {
		var resp []byte
		var cc types.CompletionCode
		switch netfn % 3 {
		case 0:
			resp, cc = b.call(types.NetFnSensorEventRequest, 0x20+cmd%0x10, data)
		case 1:
			resp, cc = b.call(types.NetFnStorageRequest, 0x20+cmd%0x10, data)
		default:
			resp, cc = b.call(types.NetFnGroupExtensionRequest, cmd%0x11, data)
		}
		if cc == types.CodeOK && len(resp) > 2+255 {
			t.Fatalf("response of %d bytes", len(resp))
		}
	})
}

// TestDCMICodes: DCMI requests without the group extension byte, of the
// wrong length or for an unsupported parameter get the spec's codes.
func TestDCMICodes(t *testing.T) {
	b, clk := offlineBMC(t)
	g := types.NetFnGroupExtensionRequest
	runCodeCases(t, b, g, []codeCase{
		{"capabilities", 0x01, "dc 01", types.CodeOK, "dc 01 05 02 0f 01 08"},
		{"capabilities without DCh", 0x01, "00 01", types.CodeRequestDataFieldInvalid, ""},
		{"capability parameter 9", 0x01, "dc 09", 0x80, ""},
		{"capabilities truncated", 0x01, "dc", types.CodeRequestDataTruncated, ""},
		{"power reading, enhanced mode", 0x02, "dc 02 05 00", types.CodeRequestDataFieldInvalid, ""},
		{"power reading too long", 0x02, "dc 01 00 00 00", types.CodeRequestDataLengthInvalid, ""},
		{"power limit", 0x03, "dc 00 00", 0x80, ""},
		{"sensor info: inlet", 0x07, "dc 01 40 00 00", types.CodeOK, "dc 01 01 03 00"},
		{"sensor info: CPU", 0x07, "dc 01 41 00 00", types.CodeOK, "dc 01 01 02 00"},
		{"sensor info: baseboard", 0x07, "dc 01 42 00 00", types.CodeOK, "dc 00 00"},
		{"sensor info: not temperature", 0x07, "dc 04 40 00 00", types.CodeRequestDataFieldInvalid, ""},
		{"temperature: baseboard", 0x10, "dc 01 42 00 00", types.CodeOK, "dc 00 00"},
		{"temperature: instance 2", 0x10, "dc 01 40 02 00", types.CodeOK, "dc 01 00"},
		{"temperature: truncated", 0x10, "dc 01 40", types.CodeRequestDataTruncated, ""},
	})
	// A minute later: the period and the statistics cover it.
	b.call(g, 0x02, testutil.MustUnhex("dc 01 00 00"))
	*clk = clk.Add(time.Minute)
	resp, cc := b.call(g, 0x02, testutil.MustUnhex("dc 01 00 00"))
	if cc != types.CodeOK || len(resp) != 18 || binary.LittleEndian.Uint32(resp[13:]) != 60000 || resp[17] != 0x40 {
		t.Errorf("power reading a minute later: % x %v", resp, cc)
	}
}

// BenchmarkFleetBMCs is the heap of 1,000 BMCs (bmc.New, no LAN socket)
// whose sensors were each read once, and of their sensor state alone
// (SDR repository, model, boot options, the standard commands' state).
func BenchmarkFleetBMCs(b *testing.B) {
	const n = 1000
	log := slog.New(slog.DiscardHandler)
	for i := 0; i < b.N; i++ {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		bs := make([]*BMC, n)
		for j := range bs {
			cfg := testConfig()
			cfg.Name = "h-" + strconv.Itoa(j)
			x, err := New(cfg, log, nil)
			if err != nil {
				b.Fatal(err)
			}
			x.Sensors().Read(sensors.CPUTemp)
			bs[j] = x
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/BMC")
		own := unsafe.Sizeof(sdrRepo{}) + unsafe.Sizeof(sensors.Model{}) + unsafe.Sizeof(bootOpts{}) + unsafe.Sizeof(stdState{})
		b.ReportMetric(float64(own), "sensor-state-bytes/BMC")
		runtime.KeepAlive(bs)
	}
}
