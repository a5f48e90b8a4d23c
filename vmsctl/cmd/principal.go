package cmd

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/ooblab/ooblab/internal/fileio"
	"github.com/ooblab/ooblab/internal/ident"
	"github.com/ooblab/ooblab/internal/inventory"
	"github.com/ooblab/ooblab/internal/pki"
)

// A principal's signing key: internal/ident. Rotation, over either channel
// (both check the same signature against the same policy):
//
//  1. vmsctl principal enroll NAME --next   new key beside the current one
//  2. every host's policy: keys = [current, next]; reload hvagent (SIGHUP)
//  3. vmsctl principal activate NAME        the VMS signs with the new key
//  4. every host's policy: keys = [next]; reload hvagent
//
// Between 2 and 4 either key is accepted, so no request is refused whatever
// order the hosts reload in.

type principalResult struct {
	Principal string `json:"principal"`
	KeyFile   string `json:"key_file"`
	CertFile  string `json:"cert_file,omitempty"`
	PublicKey string `json:"public_key"`
	// PolicyLine is what the principal's table in every host's policy
	// must say (both keys during a rotation).
	PolicyLine string `json:"policy_line"`
	Next       bool   `json:"next,omitempty"`
}

func (r principalResult) table(w io.Writer) {
	what := "key"
	if r.Next {
		what = "next key (not yet used; see 'vmsctl principal activate')"
	}
	fmt.Fprintf(w, "principal %s: %s in %s (0600)", r.Principal, what, r.KeyFile)
	if r.CertFile != "" {
		fmt.Fprintf(w, ", client certificate in %s", r.CertFile)
	}
	fmt.Fprintf(w, "\nput this line in [principals.%s] of every host's policy, then reload hvagent (SIGHUP):\n%s\n", r.Principal, r.PolicyLine)
}

// credential returns name's inventory credential, adding one with default
// file names when the inventory has none.
func (a *App) credential(name string) *inventory.Credential {
	if c, ok := a.inv.Credential(name); ok {
		if c.KeyFile == "" {
			c.KeyFile = "principal-" + name + ".key"
		}
		return c
	}
	a.inv.Credentials = append(a.inv.Credentials, inventory.Credential{Principal: name, KeyFile: "principal-" + name + ".key"})
	return &a.inv.Credentials[len(a.inv.Credentials)-1]
}

func publicLine(keys ...ed25519.PrivateKey) (first string, line string) {
	line = "keys = ["
	for i, k := range keys {
		s := ident.FormatPublicKey(k.Public().(ed25519.PublicKey))
		if i == 0 {
			first = s
		} else {
			line += ", "
		}
		line += fmt.Sprintf("%q", s)
	}
	return first, line + "]"
}

type enrollPrincipalOpts struct {
	next, force, onlyIfMissing bool
	caCert, caKey              string
}

// enrollPrincipal creates name's key (or its next key) and, given a CA,
// its client certificate, and records the credential in the inventory.
// With onlyIfMissing an existing key is kept and reported.
func (a *App) enrollPrincipal(name string, o enrollPrincipalOpts) (principalResult, error) {
	// The name becomes a file name (principal-NAME.key): no separators,
	// no "..", nothing outside the inventory's folder.
	if err := fileio.CheckName("principal", name); err != nil {
		return principalResult{}, usageError{err}
	}
	cr := a.credential(name)
	keyPath, certPath := a.inv.Path(cr.KeyFile), ""
	if cr.CertFile != "" {
		certPath = a.inv.Path(cr.CertFile)
	} else if o.caCert != "" {
		cr.CertFile = "principal-" + name + ".pem"
		certPath = a.inv.Path(cr.CertFile)
	}
	var current ed25519.PrivateKey
	if k, err := ident.LoadPrivateKey(keyPath); err == nil {
		current = k
	} else if !errors.Is(err, os.ErrNotExist) {
		return principalResult{}, err
	}
	if current != nil && o.onlyIfMissing {
		pub, line := publicLine(current)
		return principalResult{Principal: name, KeyFile: keyPath, CertFile: certPath, PublicKey: pub, PolicyLine: line}, nil
	}
	if o.next {
		if current == nil {
			return principalResult{}, usagef("principal %s has no key to rotate from: enroll it without --next", name)
		}
		keyPath += ".next"
		if certPath != "" {
			certPath += ".next"
		}
	} else if current != nil && !o.force {
		return principalResult{}, usagef("%s exists: give --force to replace the key (every host's policy must then name the new one), or rotate with --next", keyPath)
	}
	k, err := ident.GenerateKey()
	if err != nil {
		return principalResult{}, err
	}
	if err := ident.WritePrivateKey(keyPath, k, o.force || o.next); err != nil {
		return principalResult{}, err
	}
	if o.caCert != "" {
		ca, err := pki.LoadCA(o.caCert, o.caKey)
		if err != nil {
			return principalResult{}, err
		}
		pemCert, err := ca.ClientCert(name, k.Public())
		if err != nil {
			return principalResult{}, err
		}
		if err := fileio.WriteFile(certPath, pemCert, 0o644); err != nil {
			return principalResult{}, err
		}
	} else {
		certPath = ""
	}
	if err := fileio.SaveInventory(a.inv, a.invFile); err != nil {
		return principalResult{}, fmt.Errorf("key written to %s but the inventory was not updated: %w", keyPath, err)
	}
	r := principalResult{Principal: name, KeyFile: keyPath, CertFile: certPath, Next: o.next}
	if o.next {
		_, r.PolicyLine = publicLine(current, k)
		r.PublicKey = ident.FormatPublicKey(k.Public().(ed25519.PublicKey))
	} else {
		r.PublicKey, r.PolicyLine = publicLine(k)
	}
	return r, nil
}

func (a *App) principalCmd() *cobra.Command {
	p := group(&cobra.Command{Use: "principal", Short: "Principals' signing keys (each request is signed by its principal) and client certificates"})
	var o enrollPrincipalOpts
	enroll := &cobra.Command{
		Use:   "enroll NAME",
		Short: "Create a principal's Ed25519 key (0600), record it in the inventory, print its policy line",
		Long: `enroll creates the principal's Ed25519 key pair: the private key is written with mode
0600 (the inventory's credential for NAME, or principal-NAME.key beside it) and signs
every request vmsctl sends as NAME; the public key is printed as the line to put in
[principals.NAME] of every host's policy. With --ca-cert and --ca-key it also issues
NAME's VMM-I client certificate for that key.

Rotation: 'enroll NAME --next' writes a new key beside the current one and prints
both public keys; once every host's policy names both (and hvagent reloaded it),
'vmsctl principal activate NAME' switches to the new key; then drop the old key
from the policies.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.loadInventory(); err != nil {
				return err
			}
			if (o.caCert == "") != (o.caKey == "") {
				return usagef("give --ca-cert and --ca-key together")
			}
			r, err := a.enrollPrincipal(args[0], o)
			if err != nil {
				return err
			}
			return a.emit(r, r.table)
		},
	}
	enroll.Flags().BoolVar(&o.next, "next", false, "rotation: write the next key beside the current one")
	enroll.Flags().BoolVar(&o.force, "force", false, "replace an existing key at once")
	enroll.Flags().StringVar(&o.caCert, "ca-cert", "", "CA certificate (PEM) that issues VMM-I client certificates")
	enroll.Flags().StringVar(&o.caKey, "ca-key", "", "that CA's private key (PEM)")

	activate := &cobra.Command{
		Use:   "activate NAME",
		Short: "Rotation: sign with the next key from now on (every policy must already name it)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.loadInventory(); err != nil {
				return err
			}
			if err := fileio.CheckName("principal", args[0]); err != nil {
				return usageError{err}
			}
			cr, ok := a.inv.Credential(args[0])
			if !ok {
				return usagef("no credential for principal %q in the inventory", args[0])
			}
			keyPath := a.inv.Path(cr.KeyFile)
			k, err := ident.LoadPrivateKey(keyPath + ".next")
			if err != nil {
				return usagef("no next key for %s (run 'vmsctl principal enroll %s --next' first): %v", args[0], args[0], err)
			}
			if cr.CertFile != "" {
				if err := os.Rename(a.inv.Path(cr.CertFile)+".next", a.inv.Path(cr.CertFile)); err != nil {
					return fmt.Errorf("next client certificate: %w", err)
				}
			}
			if err := os.Rename(keyPath+".next", keyPath); err != nil {
				return err
			}
			r := principalResult{Principal: args[0], KeyFile: keyPath}
			r.PublicKey, r.PolicyLine = publicLine(k)
			return a.emit(r, func(w io.Writer) {
				fmt.Fprintf(w, "principal %s now signs with %s\nonce no request is in flight with the old key, shorten [principals.%s] in every host's policy to:\n%s\n",
					r.Principal, r.PublicKey, r.Principal, r.PolicyLine)
			})
		},
	}
	p.AddCommand(enroll, activate)
	return p
}
