package cmd

import (
	"bytes"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"image/png"
	"io"
	"os"
	"strings"

	"github.com/mdp/qrterminal/v3"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	"github.com/spf13/cobra"

	"github.com/ooblab/ooblab/internal/fileio"
	"github.com/ooblab/ooblab/internal/ident"
	"github.com/ooblab/ooblab/internal/inventory"
	"github.com/ooblab/ooblab/internal/seal"
)

// writeKey writes an otpauth URI to path with mode 0600, refusing to replace
// an existing key unless force. A new file is created exclusively (O_EXCL
// does not follow a symbolic link); a replaced one is swapped in whole
// (fileio.WriteFile: a link there is replaced, not followed).
func writeKey(path string, uri string, force bool) error {
	if force {
		return fileio.WriteFile(path, []byte(uri+"\n"), 0o600)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return usagef("%s exists: give --force to replace the key (the other side must then be re-enrolled)", path)
		}
		return err
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.WriteString(uri + "\n"); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// qrKey is a key that draws itself as a QR code PNG.
type qrKey interface {
	PNG(size int) ([]byte, error)
}

// groupKey is an operator's TOTP key for one host group, labelled
// "NAME@GROUP" (a seal.Key's label must be a host id).
type groupKey struct{ k *otp.Key }

func (g groupKey) PNG(size int) ([]byte, error) {
	img, err := g.k.Image(size, size)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

type enrollResult struct {
	Name    string `json:"name"`
	KeyFile string `json:"key_file"`
	URI     string `json:"otpauth_uri"`
	QR      string `json:"qr_png,omitempty"`
	// Principal is the signing key of the principal that speaks to this
	// host (enroll) or of the operator (user enroll), created if missing.
	Principal *principalResult `json:"principal,omitempty"`
}

// enrollOut writes the QR PNG (when qr is set) and prints the result; with
// phone it also draws the QR code on the terminal, for an authenticator
// app to scan.
func (a *App) enrollOut(r enrollResult, k qrKey, qr string, phone bool) error {
	if qr != "" {
		img, err := k.PNG(320)
		if err != nil {
			return err
		}
		// The QR code holds the secret: 0600 even over an existing file,
		// and a symbolic link at qr is replaced, never followed.
		if err := fileio.WriteFile(qr, img, 0o600); err != nil {
			return err
		}
		r.QR = qr
	}
	return a.emit(r, func(w io.Writer) {
		if phone {
			fmt.Fprintln(w, "Scan this with the operator's authenticator app (any RFC 6238 app: Google Authenticator, Aegis, FreeOTP, 1Password…):")
			qrterminal.GenerateWithConfig(r.URI, qrterminal.Config{Level: qrterminal.L, Writer: w, HalfBlocks: true,
				BlackChar: qrterminal.BLACK_BLACK, WhiteBlackChar: qrterminal.WHITE_BLACK, WhiteChar: qrterminal.WHITE_WHITE,
				BlackWhiteChar: qrterminal.BLACK_WHITE, QuietZone: 2})
		}
		fmt.Fprintf(w, "%s\nkey written to %s (0600)", r.URI, r.KeyFile)
		if r.QR != "" {
			fmt.Fprintf(w, "; QR code in %s", r.QR)
		}
		fmt.Fprintln(w)
		if r.Principal != nil {
			r.Principal.table(w)
		}
	})
}

func (a *App) enrollCmd() *cobra.Command {
	var qr string
	var force bool
	c := &cobra.Command{
		Use:   "enroll HOST",
		Short: "Create the host's sealing key (TOTP secret), write it 0600 and record it in the inventory",
		Long: `enroll creates a new per-host secret as an RFC 6238 TOTP key, prints its otpauth://
URI (give the same key to the host's hvagent), optionally writes it as a QR code,
writes the key file with mode 0600 (the host's secret_file, or HOST.key beside the
inventory) and updates the inventory.`,
		Args: exactArgs(1), ValidArgsFunction: a.hostNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.loadInventory(); err != nil {
				return err
			}
			h, err := a.inv.Host(args[0])
			if err != nil {
				return err
			}
			if err := fileio.CheckName("host", h.Name); err != nil {
				return usageError{err} // it names the key file
			}
			k, err := seal.Enroll(h.HostID)
			if err != nil {
				return err
			}
			if h.SecretFile == "" {
				h.SecretFile = h.Name + ".key"
			}
			path := a.inv.Path(h.SecretFile)
			if err := writeKey(path, k.URI(), force); err != nil {
				return err
			}
			if err := fileio.SaveInventory(a.inv, a.invFile); err != nil {
				return fmt.Errorf("key written to %s but the inventory was not updated: %w", path, err)
			}
			r := enrollResult{Name: h.Name, KeyFile: path, URI: k.URI()}
			if a.inv.Principal != "" {
				pr, err := a.enrollPrincipal(a.inv.Principal, enrollPrincipalOpts{onlyIfMissing: true})
				if err != nil {
					return err
				}
				r.Principal = &pr
			}
			return a.enrollOut(r, k, qr, false)
		},
	}
	c.Flags().StringVar(&qr, "qr", "", "also write the URI as a QR code PNG to this file")
	c.Flags().BoolVar(&force, "force", false, "replace an existing key")
	return c
}

func (a *App) userCmd() *cobra.Command {
	u := group(&cobra.Command{Use: "user", Short: "Operators who answer challenges"})
	var qr string
	var force bool
	var group string
	var approval bool
	enroll := &cobra.Command{
		Use:   "enroll NAME",
		Short: "Create an operator's own TOTP key for challenges, show it as a QR code for an authenticator app, and record the operator in the inventory",
		Long: `user enroll creates the operator's RFC 6238 TOTP key, prints its otpauth:// URI,
draws it as a QR code on the terminal and writes it as a PNG: scan either with any
authenticator app on the operator's phone. Challenges are then answered with the
app's 6-digit code (at the prompt, or in $VMSCTL_OTP or --otp-file). Register the
same key for the operator in hvagent's authorization list ([users.NAME]
totp_secret_file). The key file (0600) is for 'vmsctl user code' and the automation
mode --otp-secret-file; keep it off the VMS otherwise.

With --group GROUP the key is for the hosts of one host group only (label
NAME@GROUP, one authenticator entry per group, recorded as operator NAME@GROUP):
register it as totp_group_files.GROUP and give each host its own group's file only,
so no host holds a key that answers for a host outside its group.

With --approval it makes the operator's Ed25519 approval key instead (0600) and
prints the policy line (approval_keys): the hosts then hold only the public key,
and challenges are answered with 'vmsctl approve' tokens.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := fileio.CheckName("operator", name); err != nil {
				return usageError{err}
			}
			if group != "" {
				if err := fileio.CheckName("host group", group); err != nil {
					return usageError{err}
				}
			}
			if err := a.loadInventory(); err != nil {
				return err
			}
			if approval {
				return a.enrollApprover(name, force)
			}
			label := name
			var k qrKey
			var uri string
			if group != "" {
				label = name + "@" + group
				gk, err := totp.Generate(totp.GenerateOpts{Issuer: seal.Issuer, AccountName: label, SecretSize: seal.SecretSize})
				if err != nil {
					return err
				}
				k, uri = groupKey{gk}, gk.URL()
			} else {
				sk, err := seal.Enroll(name)
				if err != nil {
					return usageError{err}
				}
				k, uri = sk, sk.URI()
			}
			var op *inventory.Operator
			for i := range a.inv.Operators {
				if a.inv.Operators[i].Name == label {
					op = &a.inv.Operators[i]
				}
			}
			if op == nil {
				a.inv.Operators = append(a.inv.Operators, inventory.Operator{Name: label})
				op = &a.inv.Operators[len(a.inv.Operators)-1]
			}
			if op.SecretFile == "" {
				op.SecretFile = "operator-" + label + ".key"
			}
			path := a.inv.Path(op.SecretFile)
			if err := writeKey(path, uri, force); err != nil {
				return err
			}
			if err := fileio.SaveInventory(a.inv, a.invFile); err != nil {
				return fmt.Errorf("key written to %s but the inventory was not updated: %w", path, err)
			}
			if qr == "" {
				qr = strings.TrimSuffix(path, ".key") + ".png"
			}
			// The operator's own signing key, for requests sent as NAME.
			pr, err := a.enrollPrincipal(name, enrollPrincipalOpts{onlyIfMissing: true})
			if err != nil {
				return err
			}
			return a.enrollOut(enrollResult{Name: label, KeyFile: path, URI: uri, Principal: &pr}, k, qr, true)
		},
	}
	enroll.Flags().StringVar(&qr, "qr", "", "where to write the URI as a QR code PNG (default: beside the key, NAME's key file with .png)")
	enroll.Flags().BoolVar(&force, "force", false, "replace an existing key")
	enroll.Flags().StringVar(&group, "group", "", "a key for one host group only (label NAME@GROUP; policy totp_group_files)")
	enroll.Flags().BoolVar(&approval, "approval", false, "make the operator's Ed25519 approval key instead of a TOTP key (policy approval_keys; vmsctl approve)")
	var codeGroup string
	code := &cobra.Command{
		Use:   "code NAME[@GROUP] [NONCE]",
		Short: "Print NAME's authenticator-app code now, or the automation code for a challenge nonce (hex)",
		Long: `code prints, from the operator's key, what the operator's authenticator app shows
now (RFC 6238, 6 digits, 30 s): the answer to give at the prompt (or in $VMSCTL_OTP, --otp-file). With
NONCE it prints the automation code bound to that challenge nonce instead (HMAC-SHA1
of the time step followed by the nonce; what --otp-secret-file computes). Run it where
the operator's key lives; the key is NAME's secret_file in the inventory (NAME@GROUP's
with --group GROUP), or --otp-secret-file.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var nonce []byte
			if len(args) == 2 {
				var err error
				if nonce, err = hex.DecodeString(args[1]); err != nil {
					return usagef("nonce %q: %v", args[1], err)
				}
			}
			file, name := a.otpFile, args[0]
			if codeGroup != "" {
				name += "@" + codeGroup
			}
			if file == "" {
				if err := a.loadInventory(); err != nil {
					return err
				}
				for _, op := range a.inv.Operators {
					if op.Name == name {
						file = a.inv.Path(op.SecretFile)
					}
				}
				if file == "" {
					return usagef("no operator %q in the inventory", name)
				}
			}
			secret, err := readUserSecret(file)
			if err != nil {
				return err
			}
			if nonce == nil {
				c, err := totp.GenerateCode(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(secret), a.Now())
				if err != nil {
					return err
				}
				fmt.Fprintln(a.Out, c)
				return nil
			}
			fmt.Fprintln(a.Out, seal.ChallengeCode(secret, nonce, a.Now()))
			return nil
		},
	}
	code.Flags().StringVar(&codeGroup, "group", "", "the code of NAME's key for this host group")
	u.AddCommand(enroll, code)
	return u
}

// enrollApprover writes operator name's Ed25519 approval key beside the
// inventory (approval-NAME.key, 0600) and prints the policy line.
func (a *App) enrollApprover(name string, force bool) error {
	path := a.inv.Path("approval-" + name + ".key")
	k, err := ident.GenerateKey()
	if err != nil {
		return err
	}
	if err := ident.WritePrivateKey(path, k, force); err != nil {
		return usagef("%v: give --force to replace the key (every policy must then name the new one)", err)
	}
	r := struct {
		Name       string `json:"name"`
		KeyFile    string `json:"key_file"`
		PolicyLine string `json:"policy_line"`
	}{name, path, approvalPublic(k)}
	return a.emit(r, func(w io.Writer) {
		fmt.Fprintf(w, "approval key of %s in %s (0600): keep it with the operator, off the VMS and the hosts\n"+
			"put this in every host's policy, then reload hvagent (SIGHUP):\n[users.%s]\n%s\n"+
			"answer challenges with: vmsctl approve --key %s HOST-ID PRINCIPAL ACTION VM REQUEST-ID NONCE\n",
			name, path, name, r.PolicyLine, path)
	})
}
