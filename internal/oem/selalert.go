package oem

import (
	"encoding/binary"
	"fmt"
)

// SEL alert record: hvagent adds one OEM timestamped SEL record (type 0xC0)
// per alert through the system interface; vmsctl host sel reads it back.
//
//	0  1   2     3  4  5  6   7  8  9   10     11  12 13 14 15
//	+-----+-----+-----------+---------+------+------+-----------+
//	| id  | C0  | timestamp | IANA    |class |cmd   |request id |
//	| 0 0 |     | u32 LE    | LSB 1st |      |      |low 32, LE |
//	+-----+-----+-----------+---------+------+------+-----------+
//
// The BMC assigns the id and the timestamp. SELAlert is bytes 10-15 (the
// record's OEM data); cmd is the vmsg.Command number, 0 when none.
type SELAlert struct {
	Class     AlertClass
	Command   uint8
	RequestID uint32
}

// AlertClass says why an alert was raised.
type AlertClass uint8

// Alert classes (the reason prefixes of hvagent's alerts).
const (
	AlertOther     AlertClass = 0x00
	AlertDenied    AlertClass = 0x01
	AlertChallenge AlertClass = 0x02
	AlertEnvelope  AlertClass = 0x03
	AlertReplay    AlertClass = 0x04
	AlertLocal     AlertClass = 0x05 // VM changed on the host, not through hvagent
	AlertGuest     AlertClass = 0x06 // VM changed by its guest
	AlertCrash     AlertClass = 0x07 // VM crashed
	AlertClock     AlertClass = 0x08 // a request sealed by a clock too far off
	AlertJournal   AlertClass = 0x09 // the agent's journal cannot be written: state changes refused
)

var alertClassNames = [...]string{"other", "denied", "challenge refused", "bad envelope", "replayed envelope",
	"unauthorized local change", "guest-initiated", "crash", "clock skew", "journal unwritable"}

func (c AlertClass) String() string {
	if int(c) < len(alertClassNames) {
		return alertClassNames[c]
	}
	return fmt.Sprintf("class %#02x", uint8(c))
}

// SELRecordTypeOEM is the SEL record type of alert records (OEM timestamped).
const SELRecordTypeOEM = 0xC0

// Record builds the 16-byte SEL record for a with manufacturer iana and
// timestamp ts (seconds since 1970; the BMC overwrites it).
func (a SELAlert) Record(iana IANA, ts uint32) [16]byte {
	var rec [16]byte
	rec[2] = SELRecordTypeOEM
	binary.LittleEndian.PutUint32(rec[3:], ts)
	rec[7], rec[8], rec[9] = byte(iana), byte(iana>>8), byte(iana>>16)
	rec[10], rec[11] = byte(a.Class), a.Command
	binary.LittleEndian.PutUint32(rec[12:], a.RequestID)
	return rec
}

// ParseSELAlert reads an alert from a 16-byte SEL record. ok is false for
// a record that is not an alert of iana (another type or manufacturer).
func ParseSELAlert(rec []byte, iana IANA) (a SELAlert, ok bool) {
	if len(rec) != 16 || rec[2] != SELRecordTypeOEM {
		return SELAlert{}, false
	}
	if IANA(uint32(rec[7])|uint32(rec[8])<<8|uint32(rec[9])<<16) != iana {
		return SELAlert{}, false
	}
	return SELAlert{Class: AlertClass(rec[10]), Command: rec[11], RequestID: binary.LittleEndian.Uint32(rec[12:])}, true
}
