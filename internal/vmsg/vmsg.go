// Package vmsg is the body of a sealed OOB message (the paper's vms_message
// and its replies), encoded as CBOR with small integer map keys so a command
// fits in one or two 223-byte records. It does no I/O.
//
// The message kind is not in the body: it travels in the sealed envelope's
// header (package seal), so Decode takes it from there. Each body is a CBOR
// map; the key numbers below are the wire contract (never reuse a number):
//
//	Request   (Kind 1)              Reply     (Kind 2)
//	  1 request id   uint             1 request id  uint
//	  2 command      uint (Command)   2 ok          bool
//	  3 vm name      text             3 error code  uint (ErrorCode)
//	  4 OOB-I addr   text             4 error text  text
//	  5 VMM-I addr   text             5 vms         array of VMState
//	  6 metadata     map text→text    6 host        HostInfo
//	  7 principal    text             7 challenge   Challenge (code ErrChallenge)
//	  8 issued       uint, unix ms    8 executed    Executed (what ran; journaled)
//	                                  9 history     array of HistoryItem
//	  9 answer       ChallengeAnswer  VMState: 1 name, 2 state text ("running",
//	 10 signature    bytes (64)         "shut off", "paused"…), 3 vcpus,
//	ChallengeAnswer: 1 nonce bytes,     4 memory KiB, 5 uptime s, 6 reason
//	                 2 code text        text ("booted", "destroyed"…), 7 CPU
//	                                    time ms, 8 autostart bool, 9 persistent
//	                                    bool, 10 max memory KiB, 11 uptime
//	                                    source text
//	                                  HostInfo: 1 host id, 2 hostname,
//	                                    3 hypervisor, 4 libvirt version, 5 time ms
//	Executed: 1 principal, 2 command, 3 vm, 4 OOB-I addr, 5 VMM-I addr,
//	  6 metadata, 7 via text, 8 time ms
//	HistoryItem: 1 request id, 2 Executed, 3 ok, 4 error code, 5 error
//	  text, 6 VM state left
//	Challenge (Kind 3)              Alert     (Kind 4)
//	  1 request id  uint              1 time ms  uint   4 vm      text
//	  2 nonce       bytes (16)        2 host     text   5 action  text
//	  3 expires     uint, unix ms     3 principal text  6 reason  text
//	  4 vm, 5 command (what the challenge is for)
//
// The request id is chosen by the VMS and kept across channels, so a retry
// on the OOB-I of a request first tried on the VMM-I is recognised.
// Encoding is CBOR core deterministic (RFC 8949 §4.2); decoding forbids
// duplicate map keys, indefinite lengths and tags, and bounds sizes.
package vmsg

import (
	"errors"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// Kind is the message kind carried in the sealed header.
type Kind uint8

const (
	KindRequest   Kind = 1
	KindReply     Kind = 2
	KindChallenge Kind = 3
	KindAlert     Kind = 4
)

func (k Kind) String() string {
	switch k {
	case KindRequest:
		return "request"
	case KindReply:
		return "reply"
	case KindChallenge:
		return "challenge"
	case KindAlert:
		return "alert"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Valid reports whether k is a known kind.
func (k Kind) Valid() bool { return k >= KindRequest && k <= KindAlert }

// Command is a VM operation.
type Command uint8

const (
	CmdInvalid  Command = 0
	CmdPing     Command = 1
	CmdList     Command = 2
	CmdStatus   Command = 3
	CmdStart    Command = 4
	CmdShutdown Command = 5
	CmdDestroy  Command = 6
	CmdReboot   Command = 7
	CmdSuspend  Command = 8
	CmdResume   Command = 9
	CmdHistory  Command = 10 // the agent's executed state changes, from its journal
)

var commandNames = [...]string{"invalid", "ping", "list", "status", "start", "shutdown", "destroy", "reboot", "suspend", "resume", "history"}

func (c Command) String() string {
	if int(c) < len(commandNames) {
		return commandNames[c]
	}
	return fmt.Sprintf("Command(%d)", uint8(c))
}

// ParseCommand maps a name ("start") to its Command.
func ParseCommand(s string) (Command, error) {
	for i, n := range commandNames[1:] {
		if n == s {
			return Command(i + 1), nil
		}
	}
	return CmdInvalid, fmt.Errorf("%w: %q", ErrCommand, s)
}

// ChangesState reports whether c changes a VM's state (and so may need a
// challenge on a protected VM).
func (c Command) ChangesState() bool { return c >= CmdStart && c <= CmdResume }

// ErrorCode classifies a failed request.
type ErrorCode uint16

const (
	ErrNone        ErrorCode = 0
	ErrBadRequest  ErrorCode = 1
	ErrDenied      ErrorCode = 2 // authorization list refused
	ErrChallenge   ErrorCode = 3 // protected VM: answer the enclosed challenge
	ErrChallengeNo ErrorCode = 4 // challenge answer wrong or expired
	ErrNoSuchVM    ErrorCode = 5
	ErrHypervisor  ErrorCode = 6
	ErrInternal    ErrorCode = 7
	ErrStale       ErrorCode = 8 // issue time too old or in the future
	// ErrInProgress: this request id is still running on the host; ask
	// again with the same id for its outcome.
	ErrInProgress ErrorCode = 9
	// ErrInterrupted: the request began before the agent crashed and its
	// outcome is unknown; VMs holds the VM's state now.
	ErrInterrupted ErrorCode = 10
	// ErrClockSkew: the request was sealed by a clock too far from the
	// host's to be served (not run); Host.TimeMs is the host's clock.
	ErrClockSkew ErrorCode = 11
)

func (e ErrorCode) String() string {
	switch e {
	case ErrNone:
		return "none"
	case ErrBadRequest:
		return "bad request"
	case ErrDenied:
		return "denied"
	case ErrChallenge:
		return "challenge required"
	case ErrChallengeNo:
		return "challenge failed"
	case ErrNoSuchVM:
		return "no such vm"
	case ErrHypervisor:
		return "hypervisor error"
	case ErrInternal:
		return "internal error"
	case ErrStale:
		return "stale request"
	case ErrInProgress:
		return "in progress"
	case ErrInterrupted:
		return "interrupted"
	case ErrClockSkew:
		return "clock skew"
	}
	return fmt.Sprintf("ErrorCode(%d)", uint16(e))
}

// Sentinel errors.
var (
	ErrKind    = errors.New("vmsg: unknown kind")
	ErrCommand = errors.New("vmsg: unknown command")
	ErrDecode  = errors.New("vmsg: malformed body")
	ErrInvalid = errors.New("vmsg: invalid message")
)

// ChallengeAnswer answers a Challenge: the nonce it carried and the TOTP
// code bound to that nonce (see seal.ChallengeCode).
type ChallengeAnswer struct {
	Nonce []byte `cbor:"1,keyasint,omitempty"`
	Code  string `cbor:"2,keyasint,omitempty"`
}

// Request asks the host to do something to a VM (or to list/ping).
type Request struct {
	ID        uint64            `cbor:"1,keyasint,omitempty"`
	Command   Command           `cbor:"2,keyasint,omitempty"`
	VM        string            `cbor:"3,keyasint,omitempty"`
	OOBAddr   string            `cbor:"4,keyasint,omitempty"`
	VMMAddr   string            `cbor:"5,keyasint,omitempty"`
	Metadata  map[string]string `cbor:"6,keyasint,omitempty"`
	Principal string            `cbor:"7,keyasint,omitempty"`
	IssuedMs  int64             `cbor:"8,keyasint,omitempty"`
	Answer    *ChallengeAnswer  `cbor:"9,keyasint,omitempty"`
	// Sig is the principal's Ed25519 signature over the request without
	// this field (see internal/ident).
	Sig []byte `cbor:"10,keyasint,omitempty"`
}

// SignedBytes is the deterministic CBOR encoding of r without Sig: the
// bytes a principal signs (internal/ident adds the domain and host id).
func (r *Request) SignedBytes() ([]byte, error) {
	c := *r
	c.Sig = nil
	if err := c.validate(); err != nil {
		return nil, err
	}
	b, err := encMode.Marshal(&c)
	if err != nil {
		return nil, fmt.Errorf("vmsg: encode request: %w", err)
	}
	return b, nil
}

// Issued returns the issue time.
func (r *Request) Issued() time.Time { return time.UnixMilli(r.IssuedMs) }

// VMState is one VM as the hypervisor reports it.
type VMState struct {
	Name      string `cbor:"1,keyasint,omitempty"`
	State     string `cbor:"2,keyasint,omitempty"`
	VCPUs     uint32 `cbor:"3,keyasint,omitempty"`
	MemoryKiB uint64 `cbor:"4,keyasint,omitempty"`
	UptimeSec uint64 `cbor:"5,keyasint,omitempty"`
	// Keys 6-11 came later: an older agent leaves them out, which reads
	// as "", 0 and false.
	Reason       string `cbor:"6,keyasint,omitempty"`
	CPUTimeMs    uint64 `cbor:"7,keyasint,omitempty"`
	Autostart    bool   `cbor:"8,keyasint,omitempty"`
	Persistent   bool   `cbor:"9,keyasint,omitempty"`
	MaxMemKiB    uint64 `cbor:"10,keyasint,omitempty"`
	UptimeSource string `cbor:"11,keyasint,omitempty"`
}

// HostInfo describes the answering host.
type HostInfo struct {
	HostID     string `cbor:"1,keyasint,omitempty"`
	Hostname   string `cbor:"2,keyasint,omitempty"`
	Hypervisor string `cbor:"3,keyasint,omitempty"`
	Libvirt    string `cbor:"4,keyasint,omitempty"`
	TimeMs     int64  `cbor:"5,keyasint,omitempty"`
}

// Reply answers a Request with the same ID.
type Reply struct {
	RequestID uint64     `cbor:"1,keyasint,omitempty"`
	OK        bool       `cbor:"2,keyasint,omitempty"`
	Code      ErrorCode  `cbor:"3,keyasint,omitempty"`
	Error     string     `cbor:"4,keyasint,omitempty"`
	VMs       []VMState  `cbor:"5,keyasint,omitempty"`
	Host      *HostInfo  `cbor:"6,keyasint,omitempty"`
	Challenge *Challenge `cbor:"7,keyasint,omitempty"`
	// Executed echoes what ran (keys 8 and 9 came later; an older agent
	// leaves them out).
	Executed *Executed     `cbor:"8,keyasint,omitempty"`
	History  []HistoryItem `cbor:"9,keyasint,omitempty"`
}

// Executed says what the agent executed for a request: who asked, over
// which channel, with which metadata and VMS addresses, and when. The
// agent journals it with the reply, which is where history comes from.
type Executed struct {
	Principal string            `cbor:"1,keyasint,omitempty"`
	Command   Command           `cbor:"2,keyasint,omitempty"`
	VM        string            `cbor:"3,keyasint,omitempty"`
	OOBAddr   string            `cbor:"4,keyasint,omitempty"`
	VMMAddr   string            `cbor:"5,keyasint,omitempty"`
	Metadata  map[string]string `cbor:"6,keyasint,omitempty"`
	Via       string            `cbor:"7,keyasint,omitempty"` // "oob-i" or "vmm-i"
	TimeMs    int64             `cbor:"8,keyasint,omitempty"`
}

// HistoryItem is one executed request in a history reply.
type HistoryItem struct {
	RequestID uint64    `cbor:"1,keyasint,omitempty"`
	Executed  Executed  `cbor:"2,keyasint"`
	OK        bool      `cbor:"3,keyasint,omitempty"`
	Code      ErrorCode `cbor:"4,keyasint,omitempty"`
	Error     string    `cbor:"5,keyasint,omitempty"`
	// State is the VM state the action left, when it reported one.
	State string `cbor:"6,keyasint,omitempty"`
}

// NonceLen is the length of a challenge nonce.
const NonceLen = 16

// Challenge asks the VMS to prove the registered user approves RequestID.
type Challenge struct {
	RequestID uint64  `cbor:"1,keyasint,omitempty"`
	Nonce     []byte  `cbor:"2,keyasint,omitempty"`
	ExpiresMs int64   `cbor:"3,keyasint,omitempty"`
	VM        string  `cbor:"4,keyasint,omitempty"`
	Command   Command `cbor:"5,keyasint,omitempty"`
}

// Expires returns the expiry time.
func (c *Challenge) Expires() time.Time { return time.UnixMilli(c.ExpiresMs) }

// Alert reports a refused request to the registered user.
type Alert struct {
	TimeMs    int64  `cbor:"1,keyasint,omitempty"`
	Host      string `cbor:"2,keyasint,omitempty"`
	Principal string `cbor:"3,keyasint,omitempty"`
	VM        string `cbor:"4,keyasint,omitempty"`
	Action    string `cbor:"5,keyasint,omitempty"`
	Reason    string `cbor:"6,keyasint,omitempty"`
}

// Message is any body; its Kind goes into the sealed header.
type Message interface{ Kind() Kind }

func (*Request) Kind() Kind   { return KindRequest }
func (*Reply) Kind() Kind     { return KindReply }
func (*Challenge) Kind() Kind { return KindChallenge }
func (*Alert) Kind() Kind     { return KindAlert }

// MaxBody bounds the input Decode accepts.
const MaxBody = 256 << 10

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	encMode, err = cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:  8,
		MaxArrayElements: 4096,
		MaxMapPairs:      256,
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsForbidden,
		UTF8:             cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

func (r *Request) validate() error {
	if r.Command == CmdInvalid || int(r.Command) >= len(commandNames) {
		return fmt.Errorf("%w: command %d", ErrCommand, r.Command)
	}
	if r.Answer != nil && len(r.Answer.Nonce) != NonceLen {
		return fmt.Errorf("%w: challenge answer nonce of %d bytes", ErrInvalid, len(r.Answer.Nonce))
	}
	return nil
}

func (c *Challenge) validate() error {
	if len(c.Nonce) != NonceLen {
		return fmt.Errorf("%w: challenge nonce of %d bytes", ErrInvalid, len(c.Nonce))
	}
	return nil
}

func validate(m Message) error {
	switch v := m.(type) {
	case *Request:
		return v.validate()
	case *Reply:
		if v.Challenge != nil {
			return v.Challenge.validate()
		}
	case *Challenge:
		return v.validate()
	}
	return nil
}

// Encode validates m and returns its kind and CBOR body.
func Encode(m Message) (Kind, []byte, error) {
	if m == nil {
		return 0, nil, fmt.Errorf("%w: nil message", ErrInvalid)
	}
	if err := validate(m); err != nil {
		return 0, nil, err
	}
	b, err := encMode.Marshal(m)
	if err != nil {
		return 0, nil, fmt.Errorf("vmsg: encode %s: %w", m.Kind(), err)
	}
	return m.Kind(), b, nil
}

// Decode decodes a body of the given kind.
func Decode(kind Kind, body []byte) (Message, error) {
	var m Message
	switch kind {
	case KindRequest:
		m = new(Request)
	case KindReply:
		m = new(Reply)
	case KindChallenge:
		m = new(Challenge)
	case KindAlert:
		m = new(Alert)
	default:
		return nil, fmt.Errorf("%w: %d", ErrKind, kind)
	}
	if err := decodeInto(body, m); err != nil {
		return nil, err
	}
	return m, nil
}

func decodeInto(body []byte, m Message) error {
	if len(body) > MaxBody {
		return fmt.Errorf("%w: %d bytes > %d", ErrDecode, len(body), MaxBody)
	}
	if err := decMode.Unmarshal(body, m); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrDecode, m.Kind(), err)
	}
	return validate(m)
}

// EncodeRequest, EncodeReply, EncodeChallenge and EncodeAlert encode one kind.
func EncodeRequest(r *Request) ([]byte, error)     { _, b, err := Encode(r); return b, err }
func EncodeReply(r *Reply) ([]byte, error)         { _, b, err := Encode(r); return b, err }
func EncodeChallenge(c *Challenge) ([]byte, error) { _, b, err := Encode(c); return b, err }
func EncodeAlert(a *Alert) ([]byte, error)         { _, b, err := Encode(a); return b, err }

// DecodeRequest, DecodeReply, DecodeChallenge and DecodeAlert decode one kind.
func DecodeRequest(b []byte) (*Request, error) {
	m := new(Request)
	if err := decodeInto(b, m); err != nil {
		return nil, err
	}
	return m, nil
}

func DecodeReply(b []byte) (*Reply, error) {
	m := new(Reply)
	if err := decodeInto(b, m); err != nil {
		return nil, err
	}
	return m, nil
}

func DecodeChallenge(b []byte) (*Challenge, error) {
	m := new(Challenge)
	if err := decodeInto(b, m); err != nil {
		return nil, err
	}
	return m, nil
}

func DecodeAlert(b []byte) (*Alert, error) {
	m := new(Alert)
	if err := decodeInto(b, m); err != nil {
		return nil, err
	}
	return m, nil
}
