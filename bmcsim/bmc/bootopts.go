package bmc

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/bougou/go-ipmi/pkg/handlers"
	"github.com/bougou/go-ipmi/pkg/types"
)

// bootOpts holds the System Boot Options parameters (IPMI v2.0 §28.12,
// Table 28-14) as provisioning tools set them: every parameter is kept
// byte for byte and read back as written.
//
//	Set System Boot Options rq: param(bit 7: mark invalid) data…
//	Get System Boot Options rq: param set block   rs: 01h param(bit 7: invalid) data…
//
//	#  name                         bytes
//	0  set in progress              1   00 complete, 01 in progress, 10 commit write
//	1  service partition selector   1
//	2  service partition scan       1
//	3  boot flag valid bit clearing 1   bit 3: keep valid past the 60 s timeout
//	4  boot info acknowledge        2   write mask, data
//	5  boot flags                   5   byte 1: bit 7 valid, bit 6 persistent, bit 5 EFI; byte 2: device
//	6  boot initiator info          9
//	7  boot initiator mailbox       1+16 (set selector, block)
//
// A once-only boot (valid, not persistent) applies to the next boot: a
// power on, power cycle or hard reset the BMC performs, or a reset of the
// host's own (HostReset) clears its valid bit, as does a minute without
// one (unless parameter 3 bit 3 is set).
type bootOpts struct {
	mu         sync.Mutex
	inProgress byte      // parameter 0, bits 1:0
	since      time.Time // when parameter 0 went to "in progress"
	params     [8][]byte
	invalid    uint8 // bit n: parameter n marked invalid
	flagsSet   time.Time
	now        func() time.Time
}

// bootParamSize is the data length of each parameter.
var bootParamSize = [8]int{1, 1, 1, 1, 2, 5, 9, 17}

const (
	bootFlagValid      = 0x80
	bootFlagPersistent = 0x40
	// inProgressTimeout ends a "set in progress" its writer abandoned.
	inProgressTimeout = time.Minute
	// onceTimeout: a once-only boot not used within it is dropped (§28.12).
	onceTimeout = time.Minute
)

func newBootOpts() *bootOpts {
	o := &bootOpts{now: time.Now}
	for i, n := range bootParamSize {
		o.params[i] = make([]byte, n)
	}
	o.params[4] = []byte{0x00, 0x00}
	return o
}

func (b *BMC) registerBootOptions(r *handlers.Registry) {
	ch := types.NetFnChassisRequest
	r.RegisterFunc(types.Command{ID: 0x08, NetFn: ch, Name: "Set System Boot Options"}, b.boot.handleSet)
	r.RegisterFunc(types.Command{ID: 0x09, NetFn: ch, Name: "Get System Boot Options"}, b.boot.handleGet)
	r.RegisterFunc(types.Command{ID: 0x02, NetFn: ch, Name: "Chassis Control"}, b.handleChassisControl)
}

// Boot option completion codes (§28.12).
const (
	ccBootParamNotSupported types.CompletionCode = 0x80
	ccBootSetInProgress     types.CompletionCode = 0x81 // "set in progress" while not "set complete"
)

func (o *bootOpts) handleSet(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	if len(req) < 1 {
		return nil, types.CodeRequestDataTruncated, nil
	}
	p := req[0] & 0x7F
	if int(p) >= len(bootParamSize) {
		return nil, ccBootParamNotSupported, nil
	}
	data := req[1:]
	if len(data) != bootParamSize[p] {
		return nil, types.CodeRequestDataLengthInvalid, nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.expireLocked()
	if req[0]&0x80 != 0 {
		o.invalid |= 1 << p
	} else {
		o.invalid &^= 1 << p
	}
	switch p {
	case 0:
		switch data[0] & 0x03 {
		case 0x00, 0x02: // set complete; commit write (writes take effect at once)
			o.inProgress = 0
		case 0x01:
			if o.inProgress == 0x01 {
				return nil, ccBootSetInProgress, nil
			}
			o.inProgress, o.since = 0x01, o.now()
		default:
			return nil, types.CodeRequestDataFieldInvalid, nil
		}
		o.params[0][0] = o.inProgress
		return nil, types.CodeOK, nil
	case 4:
		// Write mask, then the acknowledge bits it selects.
		mask := data[0]
		o.params[4][0] = mask
		o.params[4][1] = o.params[4][1]&^mask | data[1]&mask
		return nil, types.CodeOK, nil
	case 5:
		o.flagsSet = o.now()
	}
	copy(o.params[p], data)
	return nil, types.CodeOK, nil
}

func (o *bootOpts) handleGet(_ context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	if len(req) < 3 {
		return nil, types.CodeRequestDataTruncated, nil
	}
	if len(req) > 3 {
		return nil, types.CodeRequestDataLengthInvalid, nil
	}
	p := req[0] & 0x7F
	if int(p) >= len(bootParamSize) {
		return nil, ccBootParamNotSupported, nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.expireLocked()
	hdr := p
	if o.invalid&(1<<p) != 0 {
		hdr |= 0x80
	}
	return append([]byte{0x01, hdr}, o.params[p]...), types.CodeOK, nil
}

// expireLocked ends an abandoned "set in progress" and drops a once-only
// boot nobody used within a minute.
func (o *bootOpts) expireLocked() {
	now := o.now()
	if o.inProgress == 0x01 && now.Sub(o.since) > inProgressTimeout {
		o.inProgress, o.params[0][0] = 0, 0
	}
	f := o.params[5]
	if f[0]&bootFlagValid != 0 && f[0]&bootFlagPersistent == 0 && o.params[3][0]&0x08 == 0 &&
		now.Sub(o.flagsSet) > onceTimeout {
		f[0] &^= bootFlagValid
	}
}

// booted is called when the BMC powered the host on, cycled or reset it:
// a once-only boot has been used.
func (o *bootOpts) booted() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if f := o.params[5]; f[0]&bootFlagPersistent == 0 {
		f[0] &^= bootFlagValid
	}
}

// HostReset tells the BMC the host reset itself (QEMU reports every system
// reset over the system interface): the boot it starts uses a once-only
// boot device, as one the BMC started does.
func (b *BMC) HostReset() { b.boot.booted() }

// BootFlags returns boot options parameter 5 as set (5 bytes).
func (b *BMC) BootFlags() []byte {
	b.boot.mu.Lock()
	defer b.boot.mu.Unlock()
	b.boot.expireLocked()
	return append([]byte(nil), b.boot.params[5]...)
}

// DiagDriver is a PowerDriver that can also pulse the diagnostic
// interrupt (NMI) of the managed system.
type DiagDriver interface {
	Diag(ctx context.Context) error
}

// handleChassisControl answers Chassis Control (§28.3): power down, up,
// cycle, hard reset, diagnostic interrupt (an NMI, when the power driver
// can send one) and soft shutdown. A power up, cycle or reset uses a
// once-only boot device.
func (b *BMC) handleChassisControl(ctx context.Context, _ *handlers.HandlerContext, req []byte) ([]byte, types.CompletionCode, error) {
	if len(req) < 1 {
		return nil, types.CodeRequestDataTruncated, nil
	}
	c := b.chassis
	var err error
	switch req[0] & 0x0F {
	case 0x00:
		err = c.SetPower(ctx, false)
	case 0x01:
		err = c.SetPower(ctx, true)
	case 0x02:
		err = c.PowerCycle(ctx)
	case 0x03:
		err = c.ColdReset(ctx)
	case 0x04:
		c.mu.Lock()
		d, _ := c.driver.(DiagDriver)
		c.mu.Unlock()
		if d == nil {
			return nil, types.CodeIllegalCommand, nil // no NMI to send without a host
		}
		err = d.Diag(ctx)
	case 0x05:
		err = c.WarmReset(ctx)
	default:
		return nil, types.CodeRequestDataFieldInvalid, nil
	}
	if err != nil {
		var cc types.CompletionCode
		if errors.As(err, &cc) {
			return nil, cc, nil
		}
		return nil, types.CodeUnspecifiedError, nil
	}
	if a := req[0] & 0x0F; a >= 0x01 && a <= 0x03 {
		b.boot.booted()
	}
	return nil, types.CodeOK, nil
}
