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
//	[users.alice]                   # a registered user
//	totp_secret_file = "alice.totp" # base32 secret or otpauth:// URI; relative to the policy file
//	# totp_uri = "otpauth://totp/ooblab:alice?secret=...&issuer=ooblab"
//	alerts = true                   # gets alerts
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
package policy

import (
	"crypto/ed25519"
	"encoding/base32"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
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

// User is a registered user.
type User struct {
	Name   string
	Secret []byte // raw TOTP key (decoded from base32)
	Alerts bool
}

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
	SecretFile string `toml:"totp_secret_file"`
	URI        string `toml:"totp_uri"`
	Alerts     bool   `toml:"alerts"`
}

type file struct {
	ReadOnlyDefault bool                 `toml:"read_only_default"`
	Protected       []string             `toml:"protected"`
	Users           map[string]userFile  `toml:"users"`
	Principals      map[string]principal `toml:"principals"`
}

// Policy is a loaded authorization list. It is immutable and safe for
// concurrent use; reload by loading a new one.
type Policy struct {
	readOnlyDefault bool
	protected       []string
	users           map[string]User
	principals      map[string]principal
	keys            map[string][]ed25519.PublicKey
}

// Load reads and checks the TOML file at p, and reads the users' TOTP
// secrets (relative secret paths are taken from p's directory).
func Load(p string) (*Policy, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	pol, err := parse(b, filepath.Dir(p))
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", p, err)
	}
	return pol, nil
}

// Parse reads a policy from TOML text; relative secret files are taken
// from dir.
func Parse(text []byte, dir string) (*Policy, error) { return parse(text, dir) }

func parse(text []byte, dir string) (*Policy, error) {
	var f file
	md, err := toml.Decode(string(text), &f)
	if err != nil {
		return nil, err
	}
	if und := md.Undecoded(); len(und) > 0 {
		return nil, fmt.Errorf("unknown keys %v", und)
	}
	pol := &Policy{
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
		sec, err := loadSecret(u, dir)
		if err != nil {
			return nil, fmt.Errorf("user %q: %w", name, err)
		}
		pol.users[name] = User{Name: name, Secret: sec, Alerts: u.Alerts}
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

// loadSecret reads a TOTP key given as a base32 secret or an otpauth URI,
// inline (totp_uri) or in a file (totp_secret_file).
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
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		s = strings.TrimSpace(string(b))
	default:
		return nil, errors.New("no totp_uri or totp_secret_file")
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
