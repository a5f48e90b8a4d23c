// Package sysif is the seam between hvagent and the BMC's system interface.
// Two transports implement Conn: the Linux driver (/dev/ipmi0) inside the
// hypervisor host, and chardev, which speaks QEMU's side of the
// ipmi-bmc-extern protocol so tests and tools can stand in for a guest.
package sysif

import (
	"context"
	"errors"
	"fmt"
)

// Conn sends requests to the BMC over the system interface and tells the
// caller when the BMC wants attention (Queue 1 not empty, a pushed message).
type Conn interface {
	// Do sends one request and waits for its response or ctx. A response
	// with a completion code other than 0 is not an error: cc carries it.
	Do(ctx context.Context, netfn, cmd uint8, data []byte) (resp []byte, cc uint8, err error)
	// Notify yields a value when the BMC raised attention or pushed a
	// message. It may be nil: the caller then polls.
	Notify() <-chan struct{}
	Close() error
}

// CCError is a non-zero completion code as an error, for callers that
// prefer errors.As over checking cc.
type CCError struct {
	NetFn, Cmd, CC uint8
}

func (e *CCError) Error() string {
	return fmt.Sprintf("sysif: netfn %#02x cmd %#02x: completion code %#02x", e.NetFn, e.Cmd, e.CC)
}

// ErrClosed is returned by a Conn used after Close.
var ErrClosed = errors.New("sysif: connection closed")

// Call runs Do and turns a non-zero completion code into a *CCError.
func Call(ctx context.Context, c Conn, netfn, cmd uint8, data []byte) ([]byte, error) {
	resp, cc, err := c.Do(ctx, netfn, cmd, data)
	if err != nil {
		return nil, err
	}
	if cc != 0 {
		return resp, &CCError{NetFn: netfn, Cmd: cmd, CC: cc}
	}
	return resp, nil
}
