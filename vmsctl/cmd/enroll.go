package cmd

import (
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/mdp/qrterminal/v3"
	"github.com/pquerna/otp/totp"
	"github.com/spf13/cobra"

	"github.com/ooblab/ooblab/internal/fileio"
	"github.com/ooblab/ooblab/internal/inventory"
	"github.com/ooblab/ooblab/internal/seal"
)

// writeKey writes an otpauth URI to path with mode 0600, refusing to replace
// an existing key unless force.
func writeKey(path string, k *seal.Key, force bool) error {
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, 0o600)
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
	if _, err := f.WriteString(k.URI() + "\n"); err != nil {
		f.Close()
		return err
	}
	return f.Close()
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
func (a *App) enrollOut(r enrollResult, k *seal.Key, qr string, phone bool) error {
	if qr != "" {
		png, err := k.PNG(320)
		if err != nil {
			return err
		}
		if err := os.WriteFile(qr, png, 0o600); err != nil {
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
			k, err := seal.Enroll(h.HostID)
			if err != nil {
				return err
			}
			if h.SecretFile == "" {
				h.SecretFile = h.Name + ".key"
			}
			path := a.inv.Path(h.SecretFile)
			if err := writeKey(path, k, force); err != nil {
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
	enroll := &cobra.Command{
		Use:   "enroll NAME",
		Short: "Create an operator's own TOTP key for challenges, show it as a QR code for an authenticator app, and record the operator in the inventory",
		Long: `user enroll creates the operator's RFC 6238 TOTP key, prints its otpauth:// URI,
draws it as a QR code on the terminal and writes it as a PNG: scan either with any
authenticator app on the operator's phone. Challenges are then answered with the
app's 6-digit code (--otp CODE, or at the prompt). Register the same key for the
operator in hvagent's authorization list ([users.NAME] totp_secret_file). The key
file (0600) is for 'vmsctl user code' and the automation mode --otp-secret-file;
keep it off the VMS otherwise.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.loadInventory(); err != nil {
				return err
			}
			name := args[0]
			k, err := seal.Enroll(name)
			if err != nil {
				return usageError{err}
			}
			var op *inventory.Operator
			for i := range a.inv.Operators {
				if a.inv.Operators[i].Name == name {
					op = &a.inv.Operators[i]
				}
			}
			if op == nil {
				a.inv.Operators = append(a.inv.Operators, inventory.Operator{Name: name})
				op = &a.inv.Operators[len(a.inv.Operators)-1]
			}
			if op.SecretFile == "" {
				op.SecretFile = "operator-" + name + ".key"
			}
			path := a.inv.Path(op.SecretFile)
			if err := writeKey(path, k, force); err != nil {
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
			return a.enrollOut(enrollResult{Name: name, KeyFile: path, URI: k.URI(), Principal: &pr}, k, qr, true)
		},
	}
	enroll.Flags().StringVar(&qr, "qr", "", "where to write the URI as a QR code PNG (default: beside the key, NAME's key file with .png)")
	enroll.Flags().BoolVar(&force, "force", false, "replace an existing key")
	code := &cobra.Command{
		Use:   "code NAME [NONCE]",
		Short: "Print NAME's authenticator-app code now, or the automation code for a challenge nonce (hex)",
		Long: `code prints, from the operator's key, what the operator's authenticator app shows
now (RFC 6238, 6 digits, 30 s): the answer to give with --otp or at the prompt. With
NONCE it prints the automation code bound to that challenge nonce instead (HMAC-SHA1
of the time step followed by the nonce; what --otp-secret-file computes). Run it where
the operator's key lives; the key is NAME's secret_file in the inventory, or
--otp-secret-file.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var nonce []byte
			if len(args) == 2 {
				var err error
				if nonce, err = hex.DecodeString(args[1]); err != nil {
					return usagef("nonce %q: %v", args[1], err)
				}
			}
			file := a.otpFile
			if file == "" {
				if err := a.loadInventory(); err != nil {
					return err
				}
				for _, op := range a.inv.Operators {
					if op.Name == args[0] {
						file = a.inv.Path(op.SecretFile)
					}
				}
				if file == "" {
					return usagef("no operator %q in the inventory", args[0])
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
	u.AddCommand(enroll, code)
	return u
}
