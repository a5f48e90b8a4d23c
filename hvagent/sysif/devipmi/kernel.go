package devipmi

import (
	"encoding/binary"
	"unsafe"
)

// The kernel's user API (include/uapi/linux/ipmi.h), mirrored with the
// layout an LP64 kernel (amd64, arm64) expects. Pointers are *byte so the
// garbage collector keeps the buffers alive while they are referenced; each
// ioctl call site also calls runtime.KeepAlive on them.

// ipmiMsg is struct ipmi_msg.
type ipmiMsg struct {
	netfn   uint8
	cmd     uint8
	dataLen uint16
	_       [4]byte
	data    *byte
}

// ipmiReq is struct ipmi_req (IPMICTL_SEND_COMMAND).
type ipmiReq struct {
	addr    *byte
	addrLen uint32
	_       [4]byte
	msgid   int64 // C long
	msg     ipmiMsg
}

// ipmiRecv is struct ipmi_recv (IPMICTL_RECEIVE_MSG[_TRUNC]).
type ipmiRecv struct {
	recvType int32
	_        [4]byte
	addr     *byte
	addrLen  uint32
	_        [4]byte
	msgid    int64
	msg      ipmiMsg
}

// ipmiCmdspec is struct ipmi_cmdspec (IPMICTL_REGISTER_FOR_CMD).
type ipmiCmdspec struct {
	netfn uint8
	cmd   uint8
}

// Address types and channels.
const (
	addrTypeSystemInterface = 0x0c // IPMI_SYSTEM_INTERFACE_ADDR_TYPE
	addrTypeIPMB            = 0x01 // IPMI_IPMB_ADDR_TYPE
	addrTypeLAN             = 0x04 // IPMI_LAN_ADDR_TYPE
	bmcChannel              = 0x0f // IPMI_BMC_CHANNEL

	// maxAddrLen is sizeof(struct ipmi_addr): int, short, 32 bytes, padded.
	maxAddrLen = 40
	// maxMsgLen is IPMI_MAX_MSG_LENGTH: the most the kernel hands back.
	maxMsgLen = 272
)

// Receive types (ipmi_recv.recv_type).
const (
	recvResponse         = 1 // IPMI_RESPONSE_RECV_TYPE: answer to our request
	recvAsyncEvent       = 2 // IPMI_ASYNC_EVENT_RECV_TYPE
	recvCommand          = 3 // IPMI_CMD_RECV_TYPE: a request pushed to us
	recvResponseResponse = 4 // IPMI_RESPONSE_RESPONSE_TYPE: our answer was sent
	recvOEM              = 5 // IPMI_OEM_RECV_TYPE
)

// ioctl numbers, computed like <asm-generic/ioctl.h>: dir<<30 | size<<16 |
// type<<8 | nr, with _IOC_WRITE = 1 and _IOC_READ = 2. The kernel declares
// SEND_COMMAND and REGISTER_FOR_CMD as _IOR although userspace writes them;
// the numbers must match the kernel's, not the intent. (go-ipmi v0.9.1's
// pkg/open swaps the two direction values: its SEND_COMMAND comes out right
// only because it also writes IOW for the kernel's _IOR, and its
// REGISTER_FOR_CMD is 0x4002690e, which the kernel rejects.)
const (
	iocWrite = 1
	iocRead  = 2
	iocMagic = 'i'
)

func ioc(dir, nr, size uintptr) uintptr { return dir<<30 | size<<16 | iocMagic<<8 | nr }

var (
	ioctlReceiveMsgTrunc = ioc(iocRead|iocWrite, 11, unsafe.Sizeof(ipmiRecv{})) // 0xc030690b
	ioctlSendCommand     = ioc(iocRead, 13, unsafe.Sizeof(ipmiReq{}))           // 0x8028690d
	ioctlRegisterForCmd  = ioc(iocRead, 14, unsafe.Sizeof(ipmiCmdspec{}))       // 0x8002690e
	ioctlUnregisterCmd   = ioc(iocRead, 15, unsafe.Sizeof(ipmiCmdspec{}))       // 0x8002690f
)

// systemInterfaceAddr is struct ipmi_system_interface_addr for the BMC,
// LUN 0: int addr_type, short channel, u8 lun, padding.
func systemInterfaceAddr() []byte {
	a := make([]byte, 8)
	putAddrHeader(a, addrTypeSystemInterface, bmcChannel)
	return a
}

func putAddrHeader(a []byte, typ int32, ch int16) {
	binary.NativeEndian.PutUint32(a, uint32(typ))
	binary.NativeEndian.PutUint16(a[4:], uint16(ch))
}

func addrHeader(a []byte) (typ int32, ch int16) {
	if len(a) < 6 {
		return -1, -1
	}
	return int32(binary.NativeEndian.Uint32(a)), int16(binary.NativeEndian.Uint16(a[4:]))
}
