package oob

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/ooblab/ooblab/bmcsim/bmcsimtest"
	"github.com/ooblab/ooblab/hvagent/agent"
	"github.com/ooblab/ooblab/hvagent/agenttest"
	"github.com/ooblab/ooblab/hvagent/alert"
	"github.com/ooblab/ooblab/hvagent/journal"
	"github.com/ooblab/ooblab/hvagent/sysif"
	"github.com/ooblab/ooblab/hvagent/virt/virttest"
	"github.com/ooblab/ooblab/internal/oem"
	"github.com/ooblab/ooblab/internal/record"
	sealpkg "github.com/ooblab/ooblab/internal/seal"
	"github.com/ooblab/ooblab/internal/testutil"
	"github.com/ooblab/ooblab/internal/vmsg"
)

// fullAlertLog is the system interface of a BMC whose alert log takes
// nothing: every write of a record addressed to every reader is refused
// with 0xC4 (a BMC whose log is at its cap and refuses, as bmcsim did).
type fullAlertLog struct{ sysif.Conn }

func (c fullAlertLog) Do(ctx context.Context, netfn, cmd uint8, data []byte) ([]byte, uint8, error) {
	if cmd == uint8(oem.CmdWriteQueue2) {
		var req oem.WriteQueueRequest
		if err := req.Unpack(data); err == nil && req.Record.Requester == 0 {
			return nil, uint8(oem.CCOutOfSpace), nil
		}
	}
	return c.Conn.Do(ctx, netfn, cmd, data)
}

// With the alert log at its cap (nobody following for ten minutes), eight
// refusals, each with its alert in the answer, fill the window at once; a
// legitimate command behind them is still answered in time: answers never
// wait on the alert log. Against bmcsim (whose full log drops its oldest
// alerts) and against a BMC that refuses alerts.
func TestFullAlertLogDoesNotStall(t *testing.T) {
	for _, refusing := range []bool{false, true} {
		name := "bmcsim"
		if refusing {
			name = "refusing BMC"
		}
		t.Run(name, func(t *testing.T) {
			lab := newBMC(t, bmcsimtest.Options{Queue2Capacity: 16}) // an alert log of 4
			var conn sysif.Conn = lab.host
			if refusing {
				conn = fullAlertLog{lab.host}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			key := mustKey(t)
			for i := range 4 { // the log at its cap of alerts, nobody following
				env, err := sealpkg.NewSealer(key).Seal(vmsg.KindAlert, uint64(900+i), randBytes(40), time.Now())
				if err != nil {
					t.Fatal(err)
				}
				recs, _ := record.Fragment(uint64(900+i), env)
				data, _ := (&oem.WriteQueueRequest{IANA: oem.DefaultIANA, Record: recs[0]}).Pack()
				if _, cc, err := lab.host.Do(ctx, uint8(oem.NetFnOEMGroupRequest), uint8(oem.CmdWriteQueue2), data); err != nil || cc != 0 {
					t.Fatalf("fill the alert log: %v %#x", err, cc)
				}
			}
			pol, hv := agenttest.Host(t, virttest.VM{Name: "web1"})
			j, err := journal.Open(filepath.Join(t.TempDir(), "j"))
			if err != nil {
				t.Fatal(err)
			}
			defer j.Close()
			a, err := agent.New(agent.Config{Key: key, Policy: pol, Hypervisor: hv, Journal: j,
				Alerts: alert.Log{Logger: testutil.Logger(t)}, Logger: testutil.Logger(t),
				RefusalAlertsPerMinute: 100}) // every refusal's alert in its answer
			if err != nil {
				t.Fatal(err)
			}
			runLoop(t, Config{Conn: conn, Handler: a, PollInterval: 10 * time.Millisecond})
			vms := dialVMS(t, lab.Port)
			v := agenttest.NewVMS(key, nil)
			const req = 0x5150
			msgs := map[uint64][]byte{}
			seal := func(id uint64, r *vmsg.Request) {
				r.ID, r.IssuedMs = id, time.Now().UnixMilli()
				env, err := v.Seal(r)
				if err != nil {
					t.Fatal(err)
				}
				msgs[id] = env
			}
			for i := range 8 {
				seal(uint64(10+i), &vmsg.Request{Principal: "monitor", Command: vmsg.CmdStart, VM: "web1"})
			}
			writeInterleaved(t, ctx, vms, req, msgs)
			legit := map[uint64][]byte{}
			env, _ := v.Seal(&vmsg.Request{ID: 99, Principal: "vms1", Command: vmsg.CmdPing, IssuedMs: time.Now().UnixMilli()})
			legit[99] = env
			start := time.Now()
			writeInterleaved(t, ctx, vms, req, legit)
			// Well within the 30 s an alert write may retry.
			rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
			defer rcancel()
			got := readAll(t, rctx, vms, req, 9)
			ok := false
			for _, env := range got {
				if m, err := v.Open(env); err == nil {
					if r, isReply := m.(*vmsg.Reply); isReply && r.RequestID == 99 && r.OK {
						ok = true
					}
				}
			}
			if !ok {
				t.Fatalf("the legitimate command was not answered")
			}
			t.Logf("legitimate command answered %v after it was sent, behind 8 refusals", time.Since(start))
		})
	}
}
