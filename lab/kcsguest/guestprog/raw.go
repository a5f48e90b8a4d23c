package main

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawConn is the bench's baseline without devipmi: blocking ioctl and
// poll(2) in the calling goroutine, as a C program would do it. The
// difference to devipmi's rows is devipmi's own cost. (Structs as in
// include/uapi/linux/ipmi.h on LP64; kept apart from devipmi on purpose so
// the baseline shares no code with what it measures.)
type rawConn struct {
	fd    int
	msgid int64
}

type rawMsg struct {
	netfn, cmd uint8
	dataLen    uint16
	_          [4]byte
	data       *byte
}

type rawReq struct {
	addr    *byte
	addrLen uint32
	_       [4]byte
	msgid   int64
	msg     rawMsg
}

type rawRecv struct {
	recvType int32
	_        [4]byte
	addr     *byte
	addrLen  uint32
	_        [4]byte
	msgid    int64
	msg      rawMsg
}

const (
	rawSendCommand = 0x8028690d
	rawReceiveMsg  = 0xc030690b
)

func openRaw(path string) (*rawConn, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return &rawConn{fd: fd}, nil
}

func (r *rawConn) close() { unix.Close(r.fd) }

func (r *rawConn) ioctl(req uintptr, p unsafe.Pointer) unix.Errno {
	for {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(r.fd), req, uintptr(p))
		if e != unix.EINTR {
			return e
		}
	}
}

// do sends netfn/cmd/data to the BMC and waits for the answer: its cc and
// its length (completion code included).
func (r *rawConn) do(netfn, cmd uint8, data []byte) (uint8, int, error) {
	si := []byte{0x0c, 0, 0, 0, 0x0f, 0, 0, 0}
	r.msgid++
	rq := rawReq{addr: &si[0], addrLen: uint32(len(si)), msgid: r.msgid, msg: rawMsg{netfn: netfn, cmd: cmd, dataLen: uint16(len(data))}}
	if len(data) > 0 {
		rq.msg.data = &data[0]
	}
	e := r.ioctl(rawSendCommand, unsafe.Pointer(&rq))
	runtime.KeepAlive(&rq)
	runtime.KeepAlive(si)
	runtime.KeepAlive(data)
	if e != 0 {
		return 0, 0, fmt.Errorf("raw send: %w", e)
	}
	var addr [40]byte
	var buf [300]byte
	for {
		fds := []unix.PollFd{{Fd: int32(r.fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, 10_000); err != nil && err != unix.EINTR {
			return 0, 0, fmt.Errorf("raw poll: %w", err)
		}
		rv := rawRecv{addr: &addr[0], addrLen: uint32(len(addr)), msg: rawMsg{dataLen: uint16(len(buf)), data: &buf[0]}}
		e := r.ioctl(rawReceiveMsg, unsafe.Pointer(&rv))
		runtime.KeepAlive(&rv)
		if e == unix.EAGAIN {
			continue
		}
		if e != 0 {
			return 0, 0, fmt.Errorf("raw receive: %w", e)
		}
		if rv.recvType == 1 && rv.msgid == r.msgid && rv.msg.dataLen > 0 {
			return buf[0], int(rv.msg.dataLen), nil
		}
	}
}
