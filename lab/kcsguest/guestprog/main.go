// Command guestprog runs as the payload of a test guest's /init: it talks to
// the BMC through /dev/ipmi0 with hvagent/sysif/devipmi and reports on the
// serial console in lines that start with "KCSGUEST-".
//
//	-mode echo   Get Device ID, register for the Queue 1 notification, then
//	             on every Notify drain Queue 1 (two-phase acknowledged reads)
//	             and write each record unchanged into Queue 2; a record with
//	             message id StopID ends the loop.
//	-mode bench  Get Device ID; then N round trips each of Get Device ID, an
//	             OEM read of (empty) Queue 1, and a 240-byte OEM write
//	             (Queue 2 on bmcsim; any BMC must at least answer it), each
//	             through devipmi and, as a baseline, with raw syscalls.
//	             On bmcsim (its manufacturer id) also a windowed read of a full
//	             Queue 1 record (rewind, no acknowledgement: the same record
//	             every time), the direction a VMS's request takes: the BMC's
//	             answer crosses the chardev, which QEMU reads a byte per
//	             main-loop iteration, so a read costs more than a write.
//	             With -devs K the guest has K BMCs (/dev/ipmi0 … K-1, one
//	             KCS each) and every round goes to each BMC in turn, so all
//	             BMCs share the same guest and the same host load.
//
// Lines: "KCSGUEST-DEVID dev=ipmiK mfr=… ipmi=… product=…" per device, then
// in bench mode "KCSGUEST-BENCH dev=ipmiK name=… …" per device and
// measurement, then "KCSGUEST-DONE".
//
// It must build with CGO_ENABLED=0: the guest has no libc.
package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/ooblab/ooblab/hvagent/sysif/devipmi"
	"github.com/ooblab/ooblab/internal/oem"
	"github.com/ooblab/ooblab/internal/record"
)

// Shared with the host side (lab/kcsguest).
const (
	NotifyCmd = uint8(oem.CmdQueue1Notify) // OEM cmd bmcsim pushes when Queue 1 gains a record
	StopID    = 0xFFFF_FFFF_FFFF_FF00      // message id that ends echo mode
	// ReadID is the message id of the full record the host side puts in
	// bmcsim's Queue 1 for bench mode's oemread-240 rows (lab/kcsguest
	// BMC.PutReadRecord): read again and again, never acknowledged.
	ReadID = 0xFFFF_FFFF_FFFF_FE00
)

func main() {
	mode := flag.String("mode", "echo", "echo or bench")
	n := flag.Int("n", 300, "bench: requests per measurement")
	poll := flag.Duration("poll", 3*time.Second, "echo: fallback poll interval when no Notify comes")
	devs := flag.Int("devs", 1, "bench: number of IPMI devices (/dev/ipmi0 … devs-1) to measure side by side")
	flag.Parse()
	if err := run(*mode, *n, *devs, *poll); err != nil {
		fmt.Printf("KCSGUEST-ERROR %v\n", err)
		os.Exit(1)
	}
}

func run(mode string, n, ndev int, poll time.Duration) error {
	if mode == "echo" {
		ndev = 1
	}
	if mode != "echo" && mode != "bench" {
		return fmt.Errorf("unknown mode %q", mode)
	}
	ctx := context.Background()
	var devs []*device
	defer func() {
		for _, d := range devs {
			d.close()
		}
	}()
	for i := range ndev {
		d, err := openDevice(ctx, i)
		if err != nil {
			return err
		}
		devs = append(devs, d)
	}
	if mode == "echo" {
		return echo(ctx, devs[0].c, poll)
	}
	return bench(ctx, devs, n)
}

// device is one BMC as the guest sees it: /dev/ipmiK through devipmi and
// through raw syscalls.
type device struct {
	name string // ipmiK
	mfr  uint32 // manufacturer id from Get Device ID
	c    *devipmi.Conn
	raw  *rawConn
}

// openDevice waits for /dev/ipmiK (init waits for ipmi0 only; ipmi_si
// registers further interfaces one by one), opens it and reports its Get
// Device ID.
func openDevice(ctx context.Context, k int) (*device, error) {
	path := fmt.Sprintf("/dev/ipmi%d", k)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // the guest has no udev to wait on
	}
	c, err := devipmi.Open(path)
	if err != nil {
		return nil, err
	}
	d := &device{name: fmt.Sprintf("ipmi%d", k), c: c}
	if k == 0 { // echo mode's notification; the kernel allows one holder per netfn/cmd
		if err := c.RegisterForCmd(uint8(oem.NetFnOEMGroupRequest), NotifyCmd); err != nil {
			c.Close()
			return nil, err
		}
	}
	resp, err := call(ctx, c, 0x06, 0x01, nil)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("%s: get device id: %w", path, err)
	}
	if len(resp) < 11 {
		c.Close()
		return nil, fmt.Errorf("%s: get device id: %d bytes", path, len(resp))
	}
	mfr := uint32(resp[6]) | uint32(resp[7])<<8 | uint32(resp[8]&0x0F)<<16
	d.mfr = mfr
	fmt.Printf("KCSGUEST-DEVID dev=%s mfr=%d ipmi=%#02x product=%#04x\n", d.name, mfr, resp[4], binary.LittleEndian.Uint16(resp[9:]))
	return d, nil
}

func (d *device) close() {
	d.c.Close()
	if d.raw != nil {
		d.raw.close()
	}
}

func call(ctx context.Context, c *devipmi.Conn, netfn, cmd uint8, data []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, cc, err := c.Do(ctx, netfn, cmd, data)
	if err != nil {
		return nil, err
	}
	if cc != 0 {
		return resp, fmt.Errorf("netfn %#02x cmd %#02x: completion code %#02x", netfn, cmd, cc)
	}
	return resp, nil
}

var iana = oem.DefaultIANA

func readQ1(ctx context.Context, c *devipmi.Conn, ack *oem.Ack) (oem.ReadQueueResponse, error) {
	req, _ := (&oem.ReadQueueRequest{IANA: iana, Ack: ack}).Pack()
	var r oem.ReadQueueResponse
	resp, err := call(ctx, c, uint8(oem.NetFnOEMGroupRequest), uint8(oem.CmdReadQueue1), req)
	if err != nil {
		return r, err
	}
	return r, r.Unpack(resp)
}

func writeQ2(ctx context.Context, c *devipmi.Conn, rec record.Record) error {
	req, err := (&oem.WriteQueueRequest{IANA: iana, Record: rec}).Pack()
	if err != nil {
		return err
	}
	_, err = call(ctx, c, uint8(oem.NetFnOEMGroupRequest), uint8(oem.CmdWriteQueue2), req)
	return err
}

func echo(ctx context.Context, c *devipmi.Conn, poll time.Duration) error {
	fmt.Println("KCSGUEST-READY")
	timer := time.NewTimer(poll)
	for {
		wake := "notify"
		select {
		case <-c.Notify():
			if !timer.Stop() {
				<-timer.C
			}
		case <-timer.C:
			wake = "poll"
		}
		timer.Reset(poll)
		var ack *oem.Ack
		for {
			r, err := readQ1(ctx, c, ack)
			if err != nil {
				return fmt.Errorf("read queue 1: %w", err)
			}
			if r.Empty {
				break
			}
			rec := r.Record
			if err := writeQ2(ctx, c, rec); err != nil {
				return fmt.Errorf("write queue 2: %w", err)
			}
			fmt.Printf("KCSGUEST-ECHO id=%d idx=%d len=%d wake=%s\n", rec.MsgID, rec.Index, len(rec.Payload), wake)
			ack = &oem.Ack{MsgID: rec.MsgID, Index: rec.Index}
			if rec.MsgID == StopID {
				if _, err := readQ1(ctx, c, ack); err != nil {
					return fmt.Errorf("acknowledge the stop record: %w", err)
				}
				fmt.Println("KCSGUEST-DONE")
				return nil
			}
		}
	}
}

// bench interleaves the measurements (one request of each in turn, on
// each device in turn) so that a change in host load during the run falls
// on all of them alike.
func bench(ctx context.Context, devs []*device, n int) error {
	oemFn := uint8(oem.NetFnOEMGroupRequest)
	empty, _ := (&oem.ReadQueueRequest{IANA: iana}).Pack()
	window, _ := (&oem.ReadQueue1WindowRequest{IANA: iana, Flags: oem.WindowRewind}).Pack()
	onward, _ := (&oem.ReadQueue1WindowRequest{IANA: iana}).Pack()
	bigFrom := func(base uint64) func(i int) []byte {
		return func(i int) []byte { return bigWrite(base + uint64(i)) }
	}
	same := func(b []byte) func(int) []byte { return func(int) []byte { return b } }
	viaDevipmi := func(c *devipmi.Conn, netfn, cmd uint8) func([]byte) (uint8, int, error) {
		return func(d []byte) (uint8, int, error) {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			resp, cc, err := c.Do(cctx, netfn, cmd, d)
			return cc, 1 + len(resp), err
		}
	}
	viaRaw := func(raw *rawConn, netfn, cmd uint8) func([]byte) (uint8, int, error) {
		return func(d []byte) (uint8, int, error) { return raw.do(netfn, cmd, d) }
	}
	type meas struct {
		dev  string
		name string
		data func(i int) []byte
		do   func([]byte) (cc uint8, respLen int, err error)
		// read: the row moves the answer's bytes (BMC to guest), not the
		// request's; bytes_per_s counts those.
		read  bool
		lat   []time.Duration
		ccs   map[uint8]int
		moved int
		resp  int
	}
	var ms []*meas
	for _, dv := range devs {
		raw, err := openRaw("/dev/" + dv.name)
		if err != nil {
			return err
		}
		dv.raw = raw
		// bmcsim's Queue 1 holds the host side's ReadID record: its empty
		// read reads on past that record (the window's cursor, which every
		// oemread-240 puts back on it), an answer without a record as on an
		// empty queue. Other BMCs have no queues: they answer 0x02 with a
		// completion code.
		// bmcsim reports oem.DefaultManufacturerID unless configured (it
		// used to report the OEM commands' IANA number).
		bmcsim := dv.mfr == oem.DefaultManufacturerID || dv.mfr == uint32(iana)
		emptyRead := &meas{name: "oemread-empty", data: same(empty), do: viaDevipmi(dv.c, oemFn, uint8(oem.CmdReadQueue1))}
		if bmcsim {
			if _, _, err := viaDevipmi(dv.c, oemFn, uint8(oem.CmdReadQueue1Win))(window); err != nil {
				return err
			}
			emptyRead = &meas{name: "oemread-empty", data: same(onward), do: viaDevipmi(dv.c, oemFn, uint8(oem.CmdReadQueue1Win))}
		}
		first := len(ms)
		ms = append(ms,
			&meas{name: "getdeviceid", data: same(nil), do: viaDevipmi(dv.c, 0x06, 0x01)},
			&meas{name: "getdeviceid-raw", data: same(nil), do: viaRaw(raw, 0x06, 0x01)},
			emptyRead,
			&meas{name: "oemwrite-240", data: bigFrom(1_000_000), do: viaDevipmi(dv.c, oemFn, uint8(oem.CmdWriteQueue2))},
			&meas{name: "oemwrite-240-raw", data: bigFrom(2_000_000), do: viaRaw(raw, oemFn, uint8(oem.CmdWriteQueue2))},
		)
		if bmcsim {
			ms = append(ms,
				&meas{name: "oemread-240", data: same(window), do: viaDevipmi(dv.c, oemFn, uint8(oem.CmdReadQueue1Win)), read: true},
				&meas{name: "oemread-240-raw", data: same(window), do: viaRaw(raw, oemFn, uint8(oem.CmdReadQueue1Win)), read: true},
			)
		}
		for _, m := range ms[first:] {
			m.dev = dv.name
		}
	}
	for i := range n {
		for _, m := range ms {
			d := m.data(i)
			t0 := time.Now()
			cc, rl, err := m.do(d)
			if err != nil {
				return fmt.Errorf("%s %s #%d: %w", m.dev, m.name, i, err)
			}
			m.lat = append(m.lat, time.Since(t0))
			if m.ccs == nil {
				m.ccs = map[uint8]int{}
			}
			m.ccs[cc]++
			m.resp = rl
			if m.read {
				if cc == 0 && rl < record.MaxPayload {
					return fmt.Errorf("%s %s #%d: a %d-byte answer: Queue 1 does not hold the bench's full record", m.dev, m.name, i, rl)
				}
				m.moved += rl
			} else {
				m.moved += len(d)
			}
		}
	}
	for _, m := range ms {
		var total time.Duration
		for _, l := range m.lat {
			total += l
		}
		lat := m.lat
		slices.Sort(lat)
		cc := ""
		for k, v := range m.ccs {
			cc += fmt.Sprintf("%02x:%d,", k, v)
		}
		dir := "req"
		if m.read {
			dir = "resp"
		}
		// bytes_per_s: the bytes the row moves (request bytes; answer
		// bytes for a read row, dir=resp) over the time spent in this
		// measurement's requests (back to back, one outstanding).
		fmt.Printf("KCSGUEST-BENCH dev=%s name=%s n=%d reqbytes=%d respbytes=%d dir=%s min_us=%d median_us=%d p99_us=%d max_us=%d total_us=%d bytes_per_s=%.0f cc=%s\n",
			m.dev, m.name, n, len(m.data(0)), m.resp, dir, lat[0].Microseconds(), lat[n/2].Microseconds(), lat[n*99/100].Microseconds(),
			lat[n-1].Microseconds(), total.Microseconds(), float64(m.moved)/total.Seconds(), cc)
	}
	fmt.Println("KCSGUEST-DONE")
	return nil
}

// bigWrite is a 240-byte WRITE_BMC_BUFF_QUEUE2 request: IANA and one record
// with a full payload.
func bigWrite(id uint64) []byte {
	rec := record.Record{MsgID: id, Index: 0, Count: 1, Payload: make([]byte, record.MaxPayload)}
	for j := range rec.Payload {
		rec.Payload[j] = byte(id) + byte(j)
	}
	b, _ := (&oem.WriteQueueRequest{IANA: iana, Record: rec}).Pack()
	return b
}
