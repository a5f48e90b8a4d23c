package bmc

import (
	"strconv"
	"testing"
	"time"

	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ooblab/ooblab/internal/testutil"
)

// TestIpmitoolBootdev: what ipmitool's chassis bootdev sets, bootparam get
// 5 reads back; a power on uses a once-only device.
func TestIpmitoolBootdev(t *testing.T) {
	need(t, "ipmitool")
	l := startLAN(t, testConfig())
	for _, suite := range []int{17, 3} {
		t.Run("suite"+strconv.Itoa(suite), func(t *testing.T) {
			l.mustIpmitool(t, suite, "chassis", "bootdev", "pxe", "options=persistent,efiboot")
			wantMatch(t, "bootparam get 5", l.mustIpmitool(t, suite, "chassis", "bootparam", "get", "5"),
				`Boot parameter data: e004000000`, `Boot Flag Valid`, `Options apply to all future boots`,
				`BIOS EFI boot`, `Force PXE`)
			if got := hexOf(l.BootFlags()); got != "e0 04 00 00 00" {
				t.Errorf("boot flags % s", got)
			}
			l.mustIpmitool(t, suite, "chassis", "bootdev", "cdrom")
			wantMatch(t, "bootparam get 5", l.mustIpmitool(t, suite, "chassis", "bootparam", "get", "5"),
				`Boot parameter data: 8014000000`, `Options apply to only next boot`, `BIOS PC Compatible \(legacy\) boot`, `Force Boot from CD/DVD`)
			l.mustIpmitool(t, suite, "chassis", "power", "on")
			wantMatch(t, "bootparam get 5 after power on", l.mustIpmitool(t, suite, "chassis", "bootparam", "get", "5"),
				`Boot parameter data: 0014000000`)
			// Parameter 0 (set in progress) ends as "set complete".
			wantMatch(t, "bootparam get 0", l.mustIpmitool(t, suite, "chassis", "bootparam", "get", "0"), `Boot parameter data: 00`)
		})
	}
}

// TestBootOptionsCodes: every parameter reads back as written; bad
// requests get §28.12's codes.
func TestBootOptionsCodes(t *testing.T) {
	b, _ := offlineBMC(t)
	now := time.Unix(1_800_000_000, 0)
	b.boot.now = func() time.Time { return now }
	ch := types.NetFnChassisRequest
	runCodeCases(t, b, ch, []codeCase{
		{"set in progress", 0x08, "00 01", types.CodeOK, ""},
		{"set in progress again", 0x08, "00 01", 0x81, ""},
		{"get 0", 0x09, "00 00 00", types.CodeOK, "01 00 01"},
		{"set 3", 0x08, "03 1f", types.CodeOK, ""},
		{"get 3", 0x09, "03 00 00", types.CodeOK, "01 03 1f"},
		{"set 4", 0x08, "04 01 01", types.CodeOK, ""},
		{"get 4", 0x09, "04 00 00", types.CodeOK, "01 04 01 01"},
		{"set 5", 0x08, "05 a0 08 01 02 03", types.CodeOK, ""},
		{"get 5", 0x09, "05 00 00", types.CodeOK, "01 05 a0 08 01 02 03"},
		{"commit write", 0x08, "00 02", types.CodeOK, ""},
		{"get 0 after commit", 0x09, "00 00 00", types.CodeOK, "01 00 00"},
		{"mark 6 invalid", 0x08, "86 01 02 03 04 05 06 07 08 09", types.CodeOK, ""},
		{"get 6", 0x09, "06 00 00", types.CodeOK, "01 86 01 02 03 04 05 06 07 08 09"},
		{"set 5 short", 0x08, "05 80 04", types.CodeRequestDataLengthInvalid, ""},
		{"set 9", 0x08, "09 00", 0x80, ""},
		{"get 99", 0x09, "63 00 00", 0x80, ""},
		{"get truncated", 0x09, "05", types.CodeRequestDataTruncated, ""},
		{"set empty", 0x08, "", types.CodeRequestDataTruncated, ""},
		{"set in progress reserved value", 0x08, "00 03", types.CodeRequestDataFieldInvalid, ""},
		{"chassis control: bad action", 0x02, "07", types.CodeRequestDataFieldInvalid, ""},
		{"chassis control: diag without a host", 0x02, "04", types.CodeIllegalCommand, ""},
	})
	// A once-only boot nobody uses within a minute is dropped (parameter
	// 3 bit 3 keeps it: clear it first).
	b.call(ch, 0x08, testutil.MustUnhex("03 00"))
	b.call(ch, 0x08, testutil.MustUnhex("05 80 04 00 00 00"))
	now = now.Add(30 * time.Second)
	if got := hexOf(b.BootFlags()); got != "80 04 00 00 00" {
		t.Errorf("after 30 s: %s", got)
	}
	now = now.Add(31 * time.Second)
	if got := hexOf(b.BootFlags()); got != "00 04 00 00 00" {
		t.Errorf("after 61 s: %s, want the valid bit cleared", got)
	}
	// The host's own reset uses a once-only boot; a persistent one stays.
	b.call(ch, 0x08, testutil.MustUnhex("05 a0 04 00 00 00"))
	b.HostReset()
	if got := hexOf(b.BootFlags()); got != "20 04 00 00 00" {
		t.Errorf("after the host's reset: %s, want the valid bit cleared", got)
	}
	b.call(ch, 0x08, testutil.MustUnhex("05 e0 04 00 00 00"))
	b.HostReset()
	if got := hexOf(b.BootFlags()); got != "e0 04 00 00 00" {
		t.Errorf("persistent after the host's reset: %s", got)
	}
	// An abandoned "set in progress" ends after a minute.
	b.call(ch, 0x08, testutil.MustUnhex("00 01"))
	now = now.Add(2 * time.Minute)
	if _, cc := b.call(ch, 0x08, testutil.MustUnhex("00 01")); cc != types.CodeOK {
		t.Errorf("set in progress after an abandoned one: %v", cc)
	}
}

// FuzzBootOptions sends arbitrary requests to the boot option and chassis
// control commands.
func FuzzBootOptions(f *testing.F) {
	for _, seed := range []string{"05 e0 04 00 00 00", "00 01", "04 01 01", "05 00 00", "04", "87 00"} {
		f.Add(byte(0x08), testutil.MustUnhex(seed))
	}
	b, _ := offlineBMC(f)
	f.Fuzz(func(t *testing.T, cmd byte, data []byte) {
		c := []uint8{0x02, 0x08, 0x09}[int(cmd)%3]
		if c == 0x02 && len(data) > 0 && data[0]&0x0F <= 0x05 {
			return // real power actions: not the decoder's business
		}
		resp, cc := b.call(types.NetFnChassisRequest, c, data)
		if cc == types.CodeOK && c == 0x09 && len(resp) < 3 {
			t.Fatalf("short answer % x", resp)
		}
	})
}
