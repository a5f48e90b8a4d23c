package app_test

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/ooblab/ooblab/bmcsim/bmcsimtest"
	"github.com/ooblab/ooblab/bmcsim/config"
	"github.com/ooblab/ooblab/internal/oem"
	"github.com/ooblab/ooblab/internal/record"
	"github.com/ooblab/ooblab/internal/testutil"
)

// TestIpmitoolReaderOwnership: with real ipmitool over RMCP+, the VMS's
// account writes a request carrying its requester id; another OPERATOR
// account, and an ADMINISTRATOR one, that read that id (OEM 0x06) are
// answered 0xD4; the VMS's account reads its answer.
func TestIpmitoolReaderOwnership(t *testing.T) {
	testutil.Integration(t, "ipmitool")
	users := []config.User{
		{Name: "vms", Password: "pw-vms-0123", Privilege: "operator"},
		{Name: "other", Password: "pw-other-0123", Privilege: "operator"},
		{Name: "admin", Password: "pw-admin-0123", Privilege: "administrator"},
	}
	b := bmcsimtest.Start(t, bmcsimtest.Options{Users: users, NoKCS: true, NoSerial: true, Logger: testutil.Logger(t)})
	raw := func(user int, cmd oem.Cmd, data []byte) (string, error) {
		u := users[user]
		args := []string{"-I", "lanplus", "-C", "17", "-H", "127.0.0.1", "-p", strconv.Itoa(b.Port),
			"-U", u.Name, "-P", u.Password, "-L", strings.ToUpper(u.Privilege), "-R", "3", "-N", "1",
			"raw", fmt.Sprintf("%#02x", uint8(oem.NetFnOEMGroupRequest)), fmt.Sprintf("%#02x", uint8(cmd))}
		for _, c := range data {
			args = append(args, fmt.Sprintf("0x%02x", c))
		}
		out, err := exec.Command("ipmitool", args...).CombinedOutput()
		return string(out), err
	}
	const id = 0x0BADCAFE
	w, err := (&oem.WriteQueueRequest{IANA: oem.DefaultIANA,
		Record: record.Record{Requester: id, MsgID: 1, Count: 1, Payload: []byte("request")}}).Pack()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := raw(0, oem.CmdWriteQueue1, w); err != nil {
		t.Fatalf("vms writes its request: %v\n%s", err, out)
	}
	if err := b.Queues.Queue2().Write(record.Record{Requester: id, MsgID: 2, Count: 1, Payload: []byte("answer")}); err != nil {
		t.Fatal(err)
	}
	r, err := (&oem.ReadQueue2ForRequest{IANA: oem.DefaultIANA, Reader: id}).Pack()
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []int{1, 2} {
		out, err := raw(u, oem.CmdReadQueue2For, r)
		if err == nil || !strings.Contains(out, "rsp=0xd4") {
			t.Errorf("%s reads the VMS's reader id: err %v, want rsp=0xd4:\n%s", users[u].Name, err, out)
		}
	}
	out, err := raw(0, oem.CmdReadQueue2For, r)
	if err != nil || !strings.Contains(out, fmt.Sprintf("% x", []byte("answer"))) {
		t.Fatalf("vms reads its answer: %v\n%s", err, out)
	}
}
