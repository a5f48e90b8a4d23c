package queue

import (
	"reflect"
	"testing"

	"github.com/bougou/go-ipmi/pkg/bmc"

	"github.com/ooblab/ooblab/internal/oem"
	"github.com/ooblab/ooblab/internal/record"
	"github.com/ooblab/ooblab/internal/seal"
	"github.com/ooblab/ooblab/internal/vmsg"
)

// TestSealedRequestThroughQueues walks one request the whole OOB-I path the
// wire formats define: vmsg → seal → record → OEM write (LAN) → Queue 1 →
// OEM read (system interface) → reassembly → open → vmsg; and the reply back
// through Queue 2.
func TestSealedRequestThroughQueues(t *testing.T) {
	b := newBench(t, Options{StateDir: t.TempDir()})
	key, err := seal.Enroll("hv1")
	if err != nil {
		t.Fatal(err)
	}
	now := b.clk.Now()
	req := &vmsg.Request{ID: 42, Command: vmsg.CmdShutdown, VM: "web1", Principal: "ops",
		Metadata: map[string]string{"why": "maintenance window"}, IssuedMs: now.UnixMilli()}

	send := func(m vmsg.Message, msgID uint64, wcmd oem.Cmd, from bool) {
		kind, body, err := vmsg.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		env, err := seal.NewSealer(key).Seal(kind, msgID, body, now)
		if err != nil {
			t.Fatal(err)
		}
		recs, err := record.Fragment(msgID, env)
		if err != nil {
			t.Fatal(err)
		}
		h := sys()
		if from {
			h = lan(bmc.PrivilegeLevelOperator)
		}
		for _, r := range recs {
			if cc := b.write(h, wcmd, r); cc != oem.CCOK {
				t.Fatalf("write: %v", cc)
			}
		}
	}
	recv := func(rcmd oem.Cmd, fromLAN bool) vmsg.Message {
		h := sys()
		if fromLAN {
			h = lan(bmc.PrivilegeLevelOperator)
		}
		ra := record.NewReassembler(record.ReassemblerConfig{})
		var ack *oem.Ack
		for range 100 {
			r, cc := b.read(h, rcmd, ack)
			if cc != oem.CCOK || r.Empty {
				t.Fatalf("read: cc %v empty %v", cc, r.Empty)
			}
			ack = ackOf(r.Record)
			env, done, err := ra.Add(r.Record, now)
			if err != nil {
				t.Fatal(err)
			}
			if !done {
				continue
			}
			b.read(h, rcmd, ack) // acknowledge the last fragment
			hdr, body, err := seal.NewOpener(key, seal.OpenerOptions{}).Open(env, now)
			if err != nil {
				t.Fatal(err)
			}
			m, err := vmsg.Decode(hdr.Kind, body)
			if err != nil {
				t.Fatal(err)
			}
			return m
		}
		t.Fatal("message never completed")
		return nil
	}

	send(req, 1001, oem.CmdWriteQueue1, true)
	if got := recv(oem.CmdReadQueue1, false); !reflect.DeepEqual(got, req) {
		t.Fatalf("host got %+v", got)
	}
	rep := &vmsg.Reply{RequestID: 42, OK: true, VMs: []vmsg.VMState{{Name: "web1", State: "shut off", VCPUs: 1, MemoryKiB: 131072}}}
	send(rep, 1002, oem.CmdWriteQueue2, false)
	if got := recv(oem.CmdReadQueue2, true); !reflect.DeepEqual(got, rep) {
		t.Fatalf("VMS got %+v", got)
	}
	if s1, s2 := b.qs.Status(); s1.Depth != 0 || s2.Depth != 0 {
		t.Fatalf("queues not drained: %+v %+v", s1, s2)
	}
}
