// Package policy is hvagent's authorization list: which principal may run
// which action on which VMs, which VMs are protected (a state change needs
// a challenge answered with a registered user's TOTP code), and who the
// registered users are.
//
// The list is a TOML file (see testdata/authz.toml):
//
//	read_only_default = true        # list/status/ping/history allowed for every known principal
//	protected = ["db-*", "prod-*"]  # path.Match globs
//
//	[groups]                        # host groups (optional): name = host-id globs
//	prod = ["db-h*"]                # a host is in the one group matching its
//	lab = ["h*"]                    # --host-id; in no group: "default"
//
//	[users.alice]                   # a registered user who answers with TOTP codes
//	totp_secret_file = "alice.totp" # base32 secret or otpauth:// URI; relative to the policy file
//	# totp_uri = "otpauth://totp/ooblab:alice?secret=...&issuer=ooblab"
//	alerts = true                   # gets alerts
//
//	[users.bob]                     # one TOTP key per host group: a host reads
//	totp_group_files = { prod = "bob@prod.totp", lab = "bob@lab.totp" } # its own group's only
//
//	[users.carol]                   # answers with signed approvals (vmsctl approve):
//	approval_keys = ["ed25519:<base64>"] # the host holds her public key only
//
//	[principals.vms1]
//	user = "alice"                  # who answers challenges for this principal
//	keys = ["ed25519:<base64>"]     # the principal's public key(s): requests must
//	                                # be signed with one of them (internal/ident);
//	                                # two while the principal rotates its key
//	[[principals.vms1.rules]]
//	actions = ["start", "shutdown"] # or ["*"]
//	vms = ["web*"]
//
// Decisions are deny by default: an unknown principal, an unknown action, or
// no matching rule is a Deny with the reason. A principal without keys can
// sign nothing, so the agent refuses every request that names it.
//
// A user answers challenges in one way: TOTP (totp_secret_file, totp_uri:
// one key for every host; totp_group_files: one key per host group) or
// approval (approval_keys). Every secret file is read with a mode check
// (internal/fileio.ReadSecret: no group or other bits), and so is the
// policy file itself when it holds a totp_uri.
package policy

import (
	"crypto/ed25519"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/ooblab/ooblab/internal/fileio"
	"github.com/ooblab/ooblab/internal/ident"
	"github.com/pquerna/otp"
)

// MaxKeys bounds the public keys of one principal (two cover a rotation).
const MaxKeys = 4

// Actions the list knows. Read-only ones never change a VM.
var (
	ReadOnlyActions = []string{"list", "status", "ping", "history"}
	ChangeActions   = []string{"start", "shutdown", "destroy", "reboot", "suspend", "resume"}
)

// IsReadOnly reports whether action never changes a VM.
func IsReadOnly(action string) bool { return slices.Contains(ReadOnlyActions, action) }

// IsKnownAction reports whether the policy knows action.
func IsKnownAction(action string) bool {
	return IsReadOnly(action) || slices.Contains(ChangeActions, action)
}

// Effect is what a Decision says.
type Effect int

// Effects.
const (
	Deny Effect = iota // the zero value denies
	Allow
	NeedChallenge
)

func (e Effect) String() string {
	switch e {
	case Allow:
		return "allow"
	case NeedChallenge:
		return "challenge"
	}
	return "deny"
}

// Decision is the answer to Decide.
type Decision struct {
	Effect Effect
	// Reason says why, for a Deny (to log and to alert) and a NeedChallenge.
	Reason string
	// User is the registered user whose TOTP code must answer the
	// challenge (NeedChallenge only).
	User string
}

// Allowed is true only for Allow.
func (d Decision) Allowed() bool { return d.Effect == Allow }

func (d Decision) String() string {
	s := d.Effect.String()
	if d.Reason != "" {
		s += ": " + d.Reason
	}
	return s
}

// DefaultGroup is the group of a host no [groups] entry names.
const DefaultGroup = "default"

// User is a registered user, as the host the policy was loaded for sees
// it.
type User struct {
	Name string
	// Secret is the raw TOTP key (decoded from base32) of this host's
	// group; nil for an approval user, and for a TOTP user with no key
	// for this host's group (who then cannot answer here).
	Secret []byte
	// ApprovalKeys are the public keys whose approvals answer for the
	// user (approval mode; two during a rotation).
	ApprovalKeys []ed25519.PublicKey
	Alerts       bool
}

// CanAnswer reports whether u can answer a challenge on this host.
func (u User) CanAnswer() bool { return len(u.Secret) > 0 || len(u.ApprovalKeys) > 0 }

// Rule allows Actions on VMs matching any of VMs.
type Rule struct {
	Actions []string `toml:"actions"`
	VMs     []string `toml:"vms"`
}

type principal struct {
	User  string   `toml:"user"`
	Keys  []string `toml:"keys"`
	Rules []Rule   `toml:"rules"`
}

type userFile struct {
	SecretFile   string            `toml:"totp_secret_file"`
	URI          string            `toml:"totp_uri"`
	GroupFiles   map[string]string `toml:"totp_group_files"`
	ApprovalKeys []string          `toml:"approval_keys"`
	Alerts       bool              `toml:"alerts"`
}

type file struct {
	ReadOnlyDefault bool                 `toml:"read_only_default"`
	Protected       []string             `toml:"protected"`
	Groups          map[string][]string  `toml:"groups"`
	Users           map[string]userFile  `toml:"users"`
	Principals      map[string]principal `toml:"principals"`
}

// Policy is a loaded authorization list. It is immutable and safe for
// concurrent use; reload by loading a new one.
type Policy struct {
	group           string // this host's group
	readOnlyDefault bool
	protected       []string
	users           map[string]User
	principals      map[string]principal
	keys            map[string][]ed25519.PublicKey
}

// Load reads and checks the TOML file at p for a host outside every group
// (LoadFor with no host id).
func Load(p string) (*Policy, error) { return LoadFor(p, "") }

// LoadFor reads and checks the TOML file at p for the host hostID: it
// reads the users' TOTP secrets of that host's group only (relative secret
// paths are taken from p's directory). The file must not be group or
// world readable when it holds a secret itself (totp_uri).
func LoadFor(p, hostID string) (*Policy, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxPolicy+1))
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if len(b) > maxPolicy {
		return nil, fmt.Errorf("policy %s: larger than %d bytes", p, maxPolicy)
	}
	pol, inline, err := parse(b, filepath.Dir(p), hostID)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", p, err)
	}
	if perm := st.Mode().Perm(); inline && perm&0o077 != 0 {
		return nil, fmt.Errorf("policy %s: %w: it holds a totp_uri (a secret) and has mode %04o, want 0600 (chmod 600 %s, or move the secret to a totp_secret_file)",
			p, fileio.ErrLooseMode, perm, p)
	}
	return pol, nil
}

const maxPolicy = 4 << 20

// Parse reads a policy from TOML text for a host outside every group;
// relative secret files are taken from dir.
func Parse(text []byte, dir string) (*Policy, error) { return ParseFor(text, dir, "") }

// ParseFor reads a policy from TOML text for the host hostID (see LoadFor).
func ParseFor(text []byte, dir, hostID string) (*Policy, error) {
	p, _, err := parse(text, dir, hostID)
	return p, err
}

// hostGroup returns the group whose globs match hostID: DefaultGroup when
// none does (or hostID is empty), an error when two do.
func hostGroup(groups map[string][]string, hostID string) (string, error) {
	var in []string
	for name, globs := range groups {
		if err := fileio.CheckName("host group", name); err != nil {
			return "", err
		}
		for _, g := range globs {
			if err := checkGlob(g); err != nil {
				return "", fmt.Errorf("group %q: %w", name, err)
			}
		}
		if hostID != "" && matchAny(globs, hostID) {
			in = append(in, name)
		}
	}
	slices.Sort(in)
	switch len(in) {
	case 0:
		return DefaultGroup, nil
	case 1:
		return in[0], nil
	}
	return "", fmt.Errorf("host %q is in groups %v: one group per host", hostID, in)
}

// parse also says whether the text holds a secret itself (totp_uri).
func parse(text []byte, dir, hostID string) (*Policy, bool, error) {
	var f file
	md, err := toml.Decode(string(text), &f)
	if err != nil {
		return nil, false, err
	}
	if und := md.Undecoded(); len(und) > 0 {
		return nil, false, fmt.Errorf("unknown keys %v", und)
	}
	inline := false
	for _, u := range f.Users {
		inline = inline || u.URI != ""
	}
	pol, err := build(f, dir, hostID)
	return pol, inline, err
}

func build(f file, dir, hostID string) (*Policy, error) {
	group, err := hostGroup(f.Groups, hostID)
	if err != nil {
		return nil, err
	}
	pol := &Policy{
		group:           group,
		readOnlyDefault: f.ReadOnlyDefault,
		protected:       f.Protected,
		users:           map[string]User{},
		principals:      f.Principals,
		keys:            map[string][]ed25519.PublicKey{},
	}
	owner := map[string]string{} // public key text → principal
	if pol.principals == nil {
		pol.principals = map[string]principal{}
	}
	for _, g := range f.Protected {
		if err := checkGlob(g); err != nil {
			return nil, fmt.Errorf("protected: %w", err)
		}
	}
	for name, u := range f.Users {
		usr, err := loadUser(name, u, dir, group, f.Groups)
		if err != nil {
			return nil, fmt.Errorf("user %q: %w", name, err)
		}
		pol.users[name] = usr
	}
	for name, pr := range f.Principals {
		if pr.User != "" {
			if _, ok := pol.users[pr.User]; !ok {
				return nil, fmt.Errorf("principal %q: user %q is not registered", name, pr.User)
			}
		}
		if len(pr.Keys) > MaxKeys {
			return nil, fmt.Errorf("principal %q: %d keys, at most %d", name, len(pr.Keys), MaxKeys)
		}
		for i, ks := range pr.Keys {
			k, err := ident.ParsePublicKey(ks)
			if err != nil {
				return nil, fmt.Errorf("principal %q key %d: %w", name, i+1, err)
			}
			txt := ident.FormatPublicKey(k)
			if o, dup := owner[txt]; dup {
				return nil, fmt.Errorf("principal %q key %d is also registered for %q: one key, one principal", name, i+1, o)
			}
			owner[txt] = name
			pol.keys[name] = append(pol.keys[name], k)
		}
		for i, r := range pr.Rules {
			if len(r.Actions) == 0 || len(r.VMs) == 0 {
				return nil, fmt.Errorf("principal %q rule %d: needs actions and vms", name, i)
			}
			for _, a := range r.Actions {
				if a != "*" && !IsKnownAction(a) {
					return nil, fmt.Errorf("principal %q rule %d: unknown action %q", name, i, a)
				}
			}
			for _, g := range r.VMs {
				if err := checkGlob(g); err != nil {
					return nil, fmt.Errorf("principal %q rule %d: %w", name, i, err)
				}
			}
		}
	}
	return pol, nil
}

func checkGlob(g string) error {
	if _, err := path.Match(g, ""); err != nil {
		return fmt.Errorf("bad pattern %q: %w", g, err)
	}
	return nil
}

// loadUser reads how user name answers on a host of group.
func loadUser(name string, u userFile, dir, group string, groups map[string][]string) (User, error) {
	usr := User{Name: name, Alerts: u.Alerts}
	totp := u.URI != "" || u.SecretFile != "" || len(u.GroupFiles) > 0
	switch {
	case totp && len(u.ApprovalKeys) > 0:
		return User{}, errors.New("a user answers with TOTP codes or with approvals, not both: give totp_* or approval_keys")
	case len(u.ApprovalKeys) > MaxKeys:
		return User{}, fmt.Errorf("%d approval keys, at most %d", len(u.ApprovalKeys), MaxKeys)
	case len(u.ApprovalKeys) > 0:
		for i, ks := range u.ApprovalKeys {
			k, err := ident.ParsePublicKey(ks)
			if err != nil {
				return User{}, fmt.Errorf("approval key %d: %w", i+1, err)
			}
			usr.ApprovalKeys = append(usr.ApprovalKeys, k)
		}
		return usr, nil
	case len(u.GroupFiles) > 0:
		if u.URI != "" || u.SecretFile != "" {
			return User{}, errors.New("give totp_group_files or one key for every host (totp_uri, totp_secret_file), not both")
		}
		for g := range u.GroupFiles {
			if _, ok := groups[g]; !ok && g != DefaultGroup {
				return User{}, fmt.Errorf("totp_group_files: no host group %q in [groups]", g)
			}
		}
		file, ok := u.GroupFiles[group]
		if !ok {
			return usr, nil // no key for this host's group: cannot answer here
		}
		sec, err := loadSecret(userFile{SecretFile: file}, dir)
		if err != nil {
			return User{}, fmt.Errorf("group %s: %w", group, err)
		}
		usr.Secret = sec
		return usr, nil
	}
	sec, err := loadSecret(u, dir)
	if err != nil {
		return User{}, err
	}
	usr.Secret = sec
	return usr, nil
}

// loadSecret reads a TOTP key given as a base32 secret or an otpauth URI,
// inline (totp_uri) or in a file (totp_secret_file, read with a mode
// check).
func loadSecret(u userFile, dir string) ([]byte, error) {
	var s string
	switch {
	case u.URI != "" && u.SecretFile != "":
		return nil, errors.New("give totp_uri or totp_secret_file, not both")
	case u.URI != "":
		s = u.URI
	case u.SecretFile != "":
		p := u.SecretFile
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		b, err := fileio.ReadSecret(p)
		if err != nil {
			return nil, err
		}
		s = strings.TrimSpace(string(b))
	default:
		return nil, errors.New("no totp_uri, totp_secret_file, totp_group_files or approval_keys")
	}
	if strings.HasPrefix(s, "otpauth://") {
		k, err := otp.NewKeyFromURL(s)
		if err != nil {
			return nil, err
		}
		s = k.Secret()
	}
	s = strings.ToUpper(strings.ReplaceAll(s, " ", ""))
	sec, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, fmt.Errorf("TOTP secret is not base32: %w", err)
	}
	if len(sec) < 10 {
		return nil, fmt.Errorf("TOTP secret is %d bytes, want at least 10 (RFC 4226 §4)", len(sec))
	}
	return sec, nil
}

// Decide says whether principal may run action on vm. vm is ignored for
// "list" and "ping".
func (p *Policy) Decide(principal, action, vm string) Decision {
	pr, ok := p.principals[principal]
	if !ok {
		return Decision{Effect: Deny, Reason: fmt.Sprintf("unknown principal %q", principal)}
	}
	if !IsKnownAction(action) {
		return Decision{Effect: Deny, Reason: fmt.Sprintf("unknown action %q", action)}
	}
	vmless := action == "list" || action == "ping" || action == "history"
	if IsReadOnly(action) && p.readOnlyDefault {
		return Decision{Effect: Allow}
	}
	if !p.ruleAllows(pr, action, vm, vmless) {
		if vmless {
			return Decision{Effect: Deny, Reason: fmt.Sprintf("no rule allows %q to %s", principal, action)}
		}
		return Decision{Effect: Deny, Reason: fmt.Sprintf("no rule allows %q to %s VM %q", principal, action, vm)}
	}
	if IsReadOnly(action) || !p.Protected(vm) {
		return Decision{Effect: Allow}
	}
	if pr.User == "" {
		return Decision{Effect: Deny, Reason: fmt.Sprintf("VM %q is protected and principal %q has no registered user to answer a challenge", vm, principal)}
	}
	if u := p.users[pr.User]; !u.CanAnswer() {
		return Decision{Effect: Deny, Reason: fmt.Sprintf("VM %q is protected and user %q has no TOTP key for host group %q on this host", vm, pr.User, p.group)}
	}
	return Decision{Effect: NeedChallenge, User: pr.User,
		Reason: fmt.Sprintf("VM %q is protected: %s needs user %q's code", vm, action, pr.User)}
}

func (p *Policy) ruleAllows(pr principal, action, vm string, vmless bool) bool {
	for _, r := range pr.Rules {
		if !slices.Contains(r.Actions, action) && !slices.Contains(r.Actions, "*") {
			continue
		}
		if vmless || matchAny(r.VMs, vm) {
			return true
		}
	}
	return false
}

func matchAny(globs []string, name string) bool {
	for _, g := range globs {
		if ok, _ := path.Match(g, name); ok { // patterns were checked at load
			return true
		}
	}
	return false
}

// Group is the host group the policy was loaded for.
func (p *Policy) Group() string { return p.group }

// Protected reports whether vm matches a protected pattern.
func (p *Policy) Protected(vm string) bool { return matchAny(p.protected, vm) }

// KnownPrincipal reports whether principal is in the list.
func (p *Policy) KnownPrincipal(principal string) bool {
	_, ok := p.principals[principal]
	return ok
}

// Keys returns the public keys registered for principal (nil when none).
func (p *Policy) Keys(principal string) []ed25519.PublicKey { return p.keys[principal] }

// User returns a registered user.
func (p *Policy) User(name string) (User, bool) {
	u, ok := p.users[name]
	return u, ok
}

// UserOf returns the registered user of principal, if any.
func (p *Policy) UserOf(principal string) (User, bool) {
	pr, ok := p.principals[principal]
	if !ok || pr.User == "" {
		return User{}, false
	}
	return p.User(pr.User)
}

// AlertUsers lists the registered users who get alerts, sorted.
func (p *Policy) AlertUsers() []string {
	var out []string
	for n, u := range p.users {
		if u.Alerts {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}
