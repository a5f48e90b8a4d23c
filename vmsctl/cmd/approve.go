package cmd

import (
	"encoding/hex"
	"fmt"
	"io"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/ooblab/ooblab/internal/fileio"
	"github.com/ooblab/ooblab/internal/ident"
	"github.com/ooblab/ooblab/internal/vmsg"
)

// EnvApprovalKey names the operator's approval key file when --key is not
// given.
const EnvApprovalKey = "VMSCTL_APPROVAL_KEY"

type approveResult struct {
	Host      string `json:"host"`
	Principal string `json:"principal"`
	Action    string `json:"action"`
	VM        string `json:"vm,omitempty"`
	RequestID uint64 `json:"request_id"`
	Token     string `json:"token"`
}

// approveCmd signs one challenge's approval with the operator's own key.
func (a *App) approveCmd() *cobra.Command {
	var keyFile string
	c := &cobra.Command{
		Use:   "approve HOST-ID PRINCIPAL ACTION VM REQUEST-ID NONCE",
		Short: "Sign an approval for one challenge with the operator's Ed25519 key (approval mode: no operator secret on any host)",
		Long: `approve answers a protected VM's challenge for a user in approval mode (hvagent's
policy: [users.NAME] approval_keys). The requester's vmsctl prints the arguments when it
is challenged ("vmsctl approve --key KEYFILE h1 vms start db1 1234 00ff…"); the operator
runs that where the operator's key lives and hands the printed token back (the
requester pastes it at the prompt, or passes it in $VMSCTL_OTP or --otp-file).

The token is the key's signature over the host id, principal, action, VM, request id
and challenge nonce: it answers that one challenge on that one host and nothing else,
and the host holds only the public key. Make the key with 'vmsctl user enroll NAME
--approval'. An operator who sends the request itself signs with --approval-key FILE
instead. VM "-" stands for none.`,
		Args: exactArgs(6),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keyFile == "" {
				keyFile = a.Getenv(EnvApprovalKey)
			}
			if keyFile == "" {
				return usagef("give --key FILE (or set %s): the operator's approval key", EnvApprovalKey)
			}
			ap := ident.Approval{HostID: args[0], Principal: args[1], Action: args[2], VM: args[3]}
			if ap.VM == "-" {
				ap.VM = ""
			}
			if _, err := vmsg.ParseCommand(ap.Action); err != nil {
				return usagef("action %q: not a command vmsctl knows", ap.Action)
			}
			var err error
			if ap.RequestID, err = strconv.ParseUint(args[4], 10, 64); err != nil {
				return usagef("request id %q: %v", args[4], err)
			}
			if ap.Nonce, err = hex.DecodeString(args[5]); err != nil || len(ap.Nonce) != 16 {
				return usagef("nonce %q: want 32 hex digits", args[5])
			}
			for _, n := range []struct{ kind, v string }{{"host id", ap.HostID}, {"principal", ap.Principal}} {
				if err := fileio.CheckName(n.kind, n.v); err != nil {
					return usageError{err}
				}
			}
			k, err := ident.LoadPrivateKey(keyFile)
			if err != nil {
				return err
			}
			tok, err := ident.SignApproval(k, ap)
			if err != nil {
				return usageError{err}
			}
			r := approveResult{Host: ap.HostID, Principal: ap.Principal, Action: ap.Action, VM: ap.VM, RequestID: ap.RequestID, Token: tok}
			return a.emit(r, func(w io.Writer) { fmt.Fprintln(w, tok) })
		},
	}
	c.Flags().StringVar(&keyFile, "key", "", "the operator's approval key (Ed25519, mode 0600; default $"+EnvApprovalKey+")")
	return c
}
