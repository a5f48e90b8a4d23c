// Package frame carries sealed envelopes over a byte stream (the VMM-I TLS
// connection between vmsctl and hvagent): each frame is a 4-byte big-endian
// length followed by that many bytes.
//
//	+----------------+---------------------------+
//	| length u32 BE  | envelope (length bytes)   |
//	+----------------+---------------------------+
//
// A length of 0 or above Max is an error; the stream is then unusable.
package frame

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Max is the largest frame accepted: a sealed 256 KiB body plus header.
const Max = 300 << 10

// ErrTooLarge is returned for a frame longer than Max (or empty).
var ErrTooLarge = errors.New("frame: length out of range")

// Write sends one frame.
func Write(w io.Writer, b []byte) error {
	if len(b) == 0 || len(b) > Max {
		return fmt.Errorf("%w: %d bytes", ErrTooLarge, len(b))
	}
	buf := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(buf, uint32(len(b)))
	copy(buf[4:], b)
	_, err := w.Write(buf)
	return err
}

// Read receives one frame. io.EOF means the peer closed between frames;
// io.ErrUnexpectedEOF that it closed inside one.
func Read(r io.Reader) ([]byte, error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(h[:])
	if n == 0 || n > Max {
		return nil, fmt.Errorf("%w: %d bytes", ErrTooLarge, n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return b, nil
}
