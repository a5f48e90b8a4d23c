package record

import (
	"encoding/binary"
	"fmt"
)

// FlagDropped marks the BMC's "alerts dropped" record (see the package doc).
const FlagDropped byte = 0x01

// NewDroppedMarker is the BMC's record saying n alert log messages were
// dropped, under message id id.
func NewDroppedMarker(id uint64, n uint32) Record {
	return Record{Flags: FlagDropped, MsgID: id, Count: 1, Payload: binary.LittleEndian.AppendUint32(nil, n)}
}

// DroppedMarker reports whether r is an "alerts dropped" record and the
// count it carries.
func DroppedMarker(r Record) (n uint32, ok bool, err error) {
	if r.Flags&FlagDropped == 0 {
		return 0, false, nil
	}
	if r.Requester != 0 || r.Count != 1 || len(r.Payload) != 4 {
		return 0, true, fmt.Errorf("%w: alerts-dropped marker %v", ErrInconsistent, r)
	}
	return binary.LittleEndian.Uint32(r.Payload), true, nil
}
