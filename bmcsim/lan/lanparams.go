package lan

import (
	"encoding/binary"
	"errors"
	"time"
)

// LAN configuration parameter 26, Bad Password Threshold (IPMI v2.0
// Table 23-4), six bytes:
//
//	byte 0   bit 0: generate a Session Audit "invalid password disable" event
//	byte 1   Bad Password Threshold number (0: disabled)
//	byte 2-3 Attempt Count Reset Interval, 10 s units, LS byte first
//	byte 4-5 User Lockout Interval, 10 s units, LS byte first
//
// bmcsim reads them as its login policy (Logins, logins.go): the threshold
// is the count of failures from which a source backs off and a user is
// slowed down, the reset interval how long failures are remembered, and the
// lockout interval how long a user's slowdown lasts. No user is ever
// locked out: Policy.BackoffMax (login_backoff_max) bounds every wait.
const (
	ParamBadPassword    = 26
	badPasswordLen      = 6
	badPasswordUnit     = 10 * time.Second
	maxBadPasswordUnits = 0xFFFF
)

// ErrBadPasswordParam is a parameter 26 that is not six bytes or sets a
// reserved bit.
var ErrBadPasswordParam = errors.New("bad password threshold: want 6 bytes, reserved bits 0")

// EncodeBadPassword is p as parameter 26's data. Durations are rounded up
// to the 10 s unit.
func EncodeBadPassword(p Policy) []byte {
	units := func(d time.Duration) uint16 {
		n := (d + badPasswordUnit - 1) / badPasswordUnit
		return uint16(min(max(n, 0), maxBadPasswordUnits))
	}
	b := make([]byte, badPasswordLen)
	if p.AuditEvent {
		b[0] = 0x01
	}
	b[1] = byte(min(max(p.Threshold, 0), 255))
	binary.LittleEndian.PutUint16(b[2:4], units(p.Reset))
	binary.LittleEndian.PutUint16(b[4:6], units(p.Slowdown))
	return b
}

// DecodeBadPassword reads parameter 26's data into a Policy (BackoffMax
// left zero: it is not part of the parameter). The event bit is kept, to
// be read back, but bmcsim has no Session Audit sensor to raise it on.
func DecodeBadPassword(b []byte) (Policy, error) {
	if len(b) != badPasswordLen || b[0]&^0x01 != 0 {
		return Policy{}, ErrBadPasswordParam
	}
	return Policy{
		AuditEvent: b[0]&0x01 != 0,
		Threshold:  int(b[1]),
		Reset:      time.Duration(binary.LittleEndian.Uint16(b[2:4])) * badPasswordUnit,
		Slowdown:   time.Duration(binary.LittleEndian.Uint16(b[4:6])) * badPasswordUnit,
	}, nil
}
