package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ooblab/ooblab/bmcsim/config"
	"github.com/ooblab/ooblab/hvagent/sysif/chardev"
	"github.com/ooblab/ooblab/internal/oem"
	"github.com/ooblab/ooblab/internal/record"
	"github.com/ooblab/ooblab/internal/testutil"
	"github.com/ooblab/ooblab/internal/vmcodec"
)

func freePort(t *testing.T, network string) int {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// A whole bmcsim process in-process: a LAN write to queue 1 is pushed to the
// host as a Queue1Notify, the host reads the record over the system
// interface, and chassis power commands from LAN reach QEMU's side.
func TestProcessQueueNotifyAndPower(t *testing.T) {
	testutil.Integration(t, "ipmitool")
	lan, kcsPort := freePort(t, "udp"), freePort(t, "tcp")
	f := &config.File{BMCs: []config.Config{{
		Name: "h1", LAN: "127.0.0.1:" + strconv.Itoa(lan), KCS: "127.0.0.1:" + strconv.Itoa(kcsPort),
		State: t.TempDir(),
		Users: []config.User{{Name: "admin", Password: "pw-0123456", Privilege: "administrator"}},
	}}}
	ctx := testutil.Serve(t, "Run", func(ctx context.Context) error {
		return Run(ctx, f, slog.New(slog.NewTextHandler(io.Discard, nil)))
	})

	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	defer dcancel()
	var host *chardev.Client
	var err error
	for {
		host, err = chardev.Dial(dctx, "127.0.0.1:"+strconv.Itoa(kcsPort))
		if err == nil || dctx.Err() != nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("dial system interface: %v", err)
	}
	defer host.Close()

	ipmitool := func(args ...string) string {
		t.Helper()
		base := []string{"-I", "lanplus", "-C", "17", "-H", "127.0.0.1", "-p", strconv.Itoa(lan), "-U", "admin", "-P", "pw-0123456", "-R", "5", "-N", "1"}
		out, err := exec.Command("ipmitool", append(base, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ipmitool %v: %v\n%s", args, err, out)
		}
		return string(out)
	}

	rec := record.Record{MsgID: 0x1122334455667788, Index: 0, Count: 1, Payload: []byte("sealed-bytes")}
	req := oem.WriteQueueRequest{IANA: oem.DefaultIANA, Record: rec}
	data, err := req.Pack()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"raw", "0x2e", "0x01"}
	for _, b := range data {
		args = append(args, fmt.Sprintf("0x%02x", b))
	}
	ipmitool(args...)

	select {
	case m := <-host.Messages():
		if m.NetFn != uint8(oem.NetFnOEMGroupRequest) || m.Cmd != uint8(oem.CmdQueue1Notify) {
			t.Fatalf("pushed %#x/%#x, want Queue1Notify", m.NetFn, m.Cmd)
		}
		var n oem.Queue1Notify
		if err := n.Unpack(m.Data); err != nil || n.Depth != 1 {
			t.Fatalf("notify %+v, %v", n, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no Queue1Notify pushed to the host")
	}

	rq := oem.ReadQueueRequest{IANA: oem.DefaultIANA}
	rqData, err := rq.Pack()
	if err != nil {
		t.Fatal(err)
	}
	resp, cc, err := host.Do(dctx, uint8(oem.NetFnOEMGroupRequest), uint8(oem.CmdReadQueue1), rqData)
	if err != nil || cc != 0 {
		t.Fatalf("read queue 1: cc %#x, %v", cc, err)
	}
	var rr oem.ReadQueueResponse
	if err := rr.Unpack(resp); err != nil || rr.Empty || string(rr.Record.Payload) != "sealed-bytes" {
		t.Fatalf("read queue 1: %+v, %v", rr, err)
	}

	out := ipmitool("chassis", "power", "off")
	if !strings.Contains(out, "Down/Off") {
		t.Fatalf("power off: %s", out)
	}
	select {
	case op := <-host.Controls():
		if uint8(op) != uint8(vmcodec.OpPowerOff) {
			t.Fatalf("QEMU got %v, want POWEROFF", op)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("POWEROFF never reached QEMU's side")
	}
	ipmitool("chassis", "power", "soft")
	select {
	case op := <-host.Controls():
		if uint8(op) != uint8(vmcodec.OpGracefulShutdown) {
			t.Fatalf("QEMU got %v, want GRACEFUL_SHUTDOWN", op)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("GRACEFUL_SHUTDOWN never reached QEMU's side")
	}
	// power diag: an NMI (QMP inject-nmi with a monitor, the chardev's
	// SEND_NMI without; was C9h).
	ipmitool("chassis", "power", "diag")
	select {
	case op := <-host.Controls():
		if uint8(op) != uint8(vmcodec.OpSendNMI) {
			t.Fatalf("QEMU got %v, want SEND_NMI", op)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("SEND_NMI never reached QEMU's side")
	}
}
