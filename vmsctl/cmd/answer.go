package cmd

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pquerna/otp"

	"github.com/ooblab/ooblab/internal/fileio"
	"github.com/ooblab/ooblab/internal/ident"
	"github.com/ooblab/ooblab/internal/seal"
	"github.com/ooblab/ooblab/internal/vmsg"
)

// EnvOTP holds a challenge answer (an app code or an approval token) for
// one run: the environment, unlike argv, is not in the process list.
const EnvOTP = "VMSCTL_OTP"

// answer is the client's ChallengeFunc. The answer comes from, in order:
// --approval-key (vmsctl signs the approval), --otp-secret-file (the
// automation code), --otp-file, $VMSCTL_OTP, or a prompt on a terminal.
// Never from argv.
func (a *App) answer(ctx context.Context, host string, ch *vmsg.Challenge) (string, error) {
	switch {
	case a.approvalKey != "":
		k, err := ident.LoadPrivateKey(a.approvalKey)
		if err != nil {
			return "", fmt.Errorf("--approval-key: %w", err)
		}
		ap, err := a.approvalFor(host, ch)
		if err != nil {
			return "", err
		}
		return ident.SignApproval(k, ap)
	case a.otpFile != "":
		secret, err := readUserSecret(a.otpFile)
		if err != nil {
			return "", err
		}
		return seal.ChallengeCode(secret, ch.Nonce, a.Now()), nil
	case a.codeFile != "":
		b, err := fileio.ReadSecret(a.codeFile)
		if err != nil {
			return "", fmt.Errorf("--otp-file: %w", err)
		}
		if s := strings.TrimSpace(string(b)); s != "" {
			return s, nil
		}
		return "", fmt.Errorf("--otp-file %s is empty", a.codeFile)
	case a.Getenv(EnvOTP) != "":
		return strings.TrimSpace(a.Getenv(EnvOTP)), nil
	case a.Terminal():
		return a.prompt(ctx, host, ch)
	}
	return "", fmt.Errorf("%s %s is protected: set %s, give --otp-file, --otp-secret-file or --approval-key, or run on a terminal", ch.Command, ch.VM, EnvOTP)
}

// approvalFor is what an approval of ch must sign: the host's id, this
// client's principal, the action, VM, request id and nonce.
func (a *App) approvalFor(host string, ch *vmsg.Challenge) (ident.Approval, error) {
	if err := a.loadInventory(); err != nil {
		return ident.Approval{}, err
	}
	h, err := a.inv.Host(host)
	if err != nil {
		return ident.Approval{}, err
	}
	id := h.HostID
	if id == "" {
		id = h.Name
	}
	principal := a.principal
	if principal == "" {
		principal = a.inv.Principal
	}
	return ident.Approval{HostID: id, Principal: principal, Action: ch.Command.String(), VM: ch.VM, RequestID: ch.RequestID, Nonce: ch.Nonce}, nil
}

// prompt asks on the terminal for the app code or an approval token, and
// prints the 'vmsctl approve' line that makes the token.
func (a *App) prompt(ctx context.Context, host string, ch *vmsg.Challenge) (string, error) {
	ap, err := a.approvalFor(host, ch)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(a.Err, "%s: %s %s is protected (challenge expires %s).\n"+
		"An operator with an approval key approves it with:\n  vmsctl approve --key KEYFILE %s\n"+
		"Code from your authenticator app, or the approval token: ",
		host, ch.Command, ch.VM, ch.Expires().Format(time.TimeOnly), approveArgs(ap))
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(a.In).ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	select {
	case s := <-line:
		if s == "" {
			return "", errors.New("no code entered")
		}
		return s, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// approveArgs are the arguments of 'vmsctl approve' for ap.
func approveArgs(ap ident.Approval) string {
	vm := ap.VM
	if vm == "" {
		vm = "-"
	}
	return fmt.Sprintf("%s %s %s %s %d %s", ap.HostID, ap.Principal, ap.Action, vm, ap.RequestID, hex.EncodeToString(ap.Nonce))
}

// readUserSecret reads an operator key: an otpauth:// URI (any label, e.g.
// "ops@prod" for a host group's key) or a bare base32 secret, from a file
// only its owner may read.
func readUserSecret(path string) ([]byte, error) {
	b, err := fileio.ReadSecret(path)
	if err != nil {
		return nil, err
	}
	s := strings.TrimSpace(string(b))
	if strings.HasPrefix(s, "otpauth://") {
		k, err := otp.NewKeyFromURL(s)
		if err != nil || k.Type() != "totp" {
			return nil, fmt.Errorf("%s: not an otpauth://totp/ URI", path) // the URL error would quote the secret
		}
		s = k.Secret()
	}
	return seal.DecodeSecret(s)
}

// approvalPublic is the policy line for an approval key.
func approvalPublic(k ed25519.PrivateKey) string {
	return fmt.Sprintf("approval_keys = [%q]", ident.FormatPublicKey(k.Public().(ed25519.PublicKey)))
}
