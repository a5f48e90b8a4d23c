// Command ipmirecv runs inside the test guest: it registers on /dev/ipmi0
// for NetFn 0x2E cmds 0x10 and 0x11 (IPMICTL_REGISTER_FOR_CMD), tells the BMC it is
// ready by sending OEM cmd 0x7E, and answers every pushed request with
// completion code 0 and the request data reversed (0x10), or runs a KCS
// benchmark and answers its timings (0x11). Linux amd64 only.
package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"syscall"
	"time"
	"unsafe"
)

const (
	ioctlRegisterForCmd = 0x8002690e // _IOR('i', 14, struct ipmi_cmdspec)
	ioctlReceiveTrunc   = 0xc030690b // _IOWR('i', 11, struct ipmi_recv)
	ioctlSendCommand    = 0x8028690d // _IOR('i', 13, struct ipmi_req)
	recvTypeCmd         = 3          // IPMI_CMD_RECV_TYPE
)

type ipmiMsg struct {
	netfn, cmd uint8
	dataLen    uint16
	_          [4]byte
	data       *byte
}

type ipmiRecv struct {
	recvType int32
	_        [4]byte
	addr     *byte
	addrLen  uint32
	_        [4]byte
	msgid    int64
	msg      ipmiMsg
}

type ipmiReq struct {
	addr    *byte
	addrLen uint32
	_       [4]byte
	msgid   int64
	msg     ipmiMsg
}

func ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	for {
		_, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return e
		}
		return nil
	}
}

func send(fd int, addr []byte, msgid int64, netfn, cmd uint8, data []byte) error {
	req := ipmiReq{addr: &addr[0], addrLen: uint32(len(addr)), msgid: msgid,
		msg: ipmiMsg{netfn: netfn, cmd: cmd, dataLen: uint16(len(data))}}
	if len(data) > 0 {
		req.msg.data = &data[0]
	}
	return ioctl(fd, ioctlSendCommand, unsafe.Pointer(&req))
}

// roundTrip sends a request to the BMC and waits for its response.
func roundTrip(fd int, addr []byte, msgid int64, netfn, cmd uint8, data []byte) error {
	if err := send(fd, addr, msgid, netfn, cmd, data); err != nil {
		return err
	}
	for {
		var set syscall.FdSet
		set.Bits[fd/64] |= 1 << (uint(fd) % 64)
		if _, err := syscall.Select(fd+1, &set, nil, nil, nil); err != nil && err != syscall.EINTR {
			return err
		}
		var a [40]byte
		var d [300]byte
		r := ipmiRecv{addr: &a[0], addrLen: uint32(len(a)), msg: ipmiMsg{dataLen: uint16(len(d)), data: &d[0]}}
		if err := ioctl(fd, ioctlReceiveTrunc, unsafe.Pointer(&r)); err != nil {
			if err == syscall.EAGAIN {
				continue
			}
			return err
		}
		if r.recvType == 1 && r.msgid == msgid {
			return nil
		}
	}
}

func main() {
	fd, err := syscall.Open("/dev/ipmi0", syscall.O_RDWR, 0)
	if err != nil {
		fmt.Println("IPMIRECV-ERROR open", err)
		os.Exit(1)
	}
	for _, cmd := range []uint8{0x10, 0x11} {
		spec := [2]uint8{0x2e, cmd}
		if err := ioctl(fd, ioctlRegisterForCmd, unsafe.Pointer(&spec)); err != nil {
			fmt.Println("IPMIRECV-ERROR register", err)
			os.Exit(1)
		}
	}
	// System interface address: addr_type 0x0c, channel 0x0f, lun 0.
	si := []byte{0x0c, 0, 0, 0, 0x0f, 0, 0, 0}
	if err := send(fd, si, 1, 0x2e, 0x7e, []byte{0xd9, 0x7e, 0x00}); err != nil {
		fmt.Println("IPMIRECV-ERROR ready", err)
	}
	fmt.Println("IPMIRECV-REGISTERED")
	for {
		var set syscall.FdSet
		set.Bits[fd/64] |= 1 << (uint(fd) % 64)
		if _, err := syscall.Select(fd+1, &set, nil, nil, nil); err != nil && err != syscall.EINTR {
			fmt.Println("IPMIRECV-ERROR select", err)
			os.Exit(1)
		}
		var addr [40]byte
		var data [300]byte
		r := ipmiRecv{addr: &addr[0], addrLen: uint32(len(addr)), msg: ipmiMsg{dataLen: uint16(len(data)), data: &data[0]}}
		if err := ioctl(fd, ioctlReceiveTrunc, unsafe.Pointer(&r)); err != nil {
			if err == syscall.EAGAIN {
				continue
			}
			fmt.Println("IPMIRECV-ERROR receive", err)
			os.Exit(1)
		}

		if r.recvType != recvTypeCmd {
			continue // responses to our ready ping, type-4 send confirmations
		}
		in := data[:r.msg.dataLen]
		if r.msg.cmd == 0x11 && len(in) == 1 {
			// Benchmark: n Get Device ID, then n 240-byte OEM writes.
			n := int(in[0])
			out := []byte{0x00}
			for _, req := range []struct {
				netfn, cmd uint8
				data       []byte
			}{{0x06, 0x01, nil}, {0x2e, 0x7e, make([]byte, 240)}} {
				t0 := time.Now()
				for i := 0; i < n; i++ {
					if err := roundTrip(fd, si, int64(100+i), req.netfn, req.cmd, req.data); err != nil {
						fmt.Println("IPMIRECV-ERROR bench", err)
						break
					}
				}
				out = binary.LittleEndian.AppendUint32(out, uint32(time.Since(t0).Microseconds()))
			}
			send(fd, addr[:r.addrLen], r.msgid, r.msg.netfn|1, r.msg.cmd, out)
			continue
		}
		fmt.Printf("IPMIRECV-GOT netfn=%#02x cmd=%#02x data=% x\n", r.msg.netfn, r.msg.cmd, in)
		out := []byte{0x00}
		for i := len(in) - 1; i >= 0; i-- {
			out = append(out, in[i])
		}
		if err := send(fd, addr[:r.addrLen], r.msgid, r.msg.netfn|1, r.msg.cmd, out); err != nil {
			fmt.Println("IPMIRECV-ERROR reply", err)
		}
	}
}
