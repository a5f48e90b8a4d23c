// Package inventory is the list of hypervisor hosts a VMS manages and how to
// reach each over both channels, and its JSON form. The lab writes it (lab
// state folder, inventory.json, mode 0600); vmsctl reads it. Secrets are
// never inline: the inventory names files (mode 0600) that hold them.
//
// Like every wire format under internal/, it does no I/O: Parse and Marshal
// work on bytes; internal/fileio reads and writes the file.
package inventory

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
)

// Inventory is the whole file.
type Inventory struct {
	// Principal is the identity the VMS states in its requests.
	Principal string `json:"principal"`
	Hosts     []Host `json:"hosts"`
	// Credentials are the principals this VMS may speak as, with their
	// private keys (each request is signed by its principal's key, see
	// internal/ident) and VMM-I client certificates.
	Credentials []Credential `json:"credentials,omitempty"`
	// Operators are the registered users who answer challenges.
	Operators []Operator `json:"operators,omitempty"`
	// VMS names this VMS's own addresses, which every request carries (the
	// paper's vms_message); an empty field is learnt per host from the
	// path to it (vmsctl/client).
	VMS VMS `json:"vms,omitzero"`
	// Dir is the folder the file was loaded from; relative paths resolve there.
	Dir string `json:"-"`
}

// Host is one hypervisor host.
type Host struct {
	Name string `json:"name"`
	// HostID names the host in sealed envelopes (seal.ValidHostID).
	HostID string `json:"host_id"`
	// SecretFile holds the host's enrolled TOTP key as an otpauth:// URI.
	SecretFile string `json:"secret_file"`
	VMMI       VMMI   `json:"vmmi"`
	BMC        BMC    `json:"bmc"`
}

// VMMI is hvagent's TLS API on the host's management network.
type VMMI struct {
	Addr string `json:"addr"` // host:port
	// CAFile is the PEM certificate that signs hvagent's certificate.
	CAFile string `json:"ca_file"`
	// ServerName is the one name the host's certificate must carry (each
	// host's certificate names that host only); default: Addr's host.
	ServerName string `json:"server_name"`
}

// VMS is the management server's own addresses on the two paths to a host.
type VMS struct {
	// OOBI is the address the VMS's RMCP+ traffic to BMCs comes from.
	OOBI string `json:"oob_i,omitempty"`
	// VMMI is the address the VMS's VMM-I connections come from.
	VMMI string `json:"vmm_i,omitempty"`
}

// Credential is one principal's private key and client certificate.
type Credential struct {
	Principal string `json:"principal"`
	// KeyFile holds the principal's Ed25519 private key (PEM PKCS #8, mode
	// 0600). It signs requests, and the VMM-I TLS handshake.
	KeyFile string `json:"key_file"`
	// CertFile is the principal's VMM-I client certificate (PEM) for that
	// key, subject common name = Principal.
	CertFile string `json:"cert_file,omitempty"`
}

// BMC is how to reach the host's BMC over IPMI LAN.
//
// User is the account of the OOB-I, `host power` and `host sel`: OPERATOR
// privilege is enough and is the least that works (the queues need it, and
// its queue 2 readers are bound to it). ConsoleUser, when set, is the
// account `host console` logs in with, at ADMINISTRATOR privilege: bmcsim's
// default sol_privilege, as the host's serial console is a root login
// prompt. Without it, host console asks for ADMINISTRATOR as User.
type BMC struct {
	Addr                string `json:"addr"` // host:port (UDP)
	User                string `json:"user"`
	PasswordFile        string `json:"password_file"`
	ConsoleUser         string `json:"console_user,omitempty"`
	ConsolePasswordFile string `json:"console_password_file,omitempty"`
	CipherSuite         int    `json:"cipher_suite"` // 17 unless set
	IANA                uint32 `json:"iana"`         // 32473 unless set
	// Redfish is the URL of the BMC's Redfish service (https://host:port),
	// RedfishCAFile the CA its certificate chains to; empty: none.
	Redfish       string `json:"redfish,omitempty"`
	RedfishCAFile string `json:"redfish_ca_file,omitempty"`
}

// Operator is a registered user with a TOTP key for challenges.
type Operator struct {
	Name       string `json:"name"`
	SecretFile string `json:"secret_file"`
}

// ErrNoHost is returned by Host for an unknown name.
var ErrNoHost = errors.New("inventory: no such host")

// Parse decodes an inventory read from path (named in errors; relative
// paths in it resolve against its folder) and fills in the defaults.
func Parse(b []byte, path string) (*Inventory, error) {
	var inv Inventory
	if err := json.Unmarshal(b, &inv); err != nil {
		return nil, fmt.Errorf("inventory %s: %w", path, err)
	}
	inv.Dir = filepath.Dir(path)
	for i := range inv.Hosts {
		h := &inv.Hosts[i]
		if h.Name == "" || h.HostID == "" {
			return nil, fmt.Errorf("inventory %s: host %d lacks name or host_id", path, i+1)
		}
		if h.BMC.CipherSuite == 0 {
			h.BMC.CipherSuite = 17
		}
		if h.BMC.IANA == 0 {
			h.BMC.IANA = 32473
		}
	}
	return &inv, nil
}

// Marshal encodes the inventory as the file holds it (indented, with a
// final newline).
func (inv *Inventory) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(inv, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Credential returns principal's credential, if the inventory has one.
func (inv *Inventory) Credential(principal string) (*Credential, bool) {
	for i := range inv.Credentials {
		if inv.Credentials[i].Principal == principal {
			return &inv.Credentials[i], true
		}
	}
	return nil, false
}

// Host returns the named host.
func (inv *Inventory) Host(name string) (*Host, error) {
	for i := range inv.Hosts {
		if inv.Hosts[i].Name == name {
			return &inv.Hosts[i], nil
		}
	}
	return nil, fmt.Errorf("%w: %q", ErrNoHost, name)
}

// Path resolves a file named in the inventory against its folder.
func (inv *Inventory) Path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(inv.Dir, p)
}
