package client

// The host's serial console through its BMC: IPMI v2.0 Serial-over-LAN
// (payload type 1) in an RMCP+ session with the inventory's BMC credentials,
// encrypted and authenticated like the session's other payloads.
//
// go-ipmi v0.9.1's client carries the SOL payload (SOLStream: sequence,
// ack, accepted counts, retries, the BMC's deactivation notice); what it
// lacks for vmsctl is wrapped here: an activation that asks for encryption
// and authentication and tells "busy" apart, taking over a busy console on
// request, and a clean deactivation on every way out. Its SOLActivate is not
// used: it puts the terminal in raw mode itself and quits on "~X"; vmsctl's
// command does the terminal and the escape ("~.", as ipmitool).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/command/transport"
	"github.com/bougou/go-ipmi/pkg/types"
)

// ErrConsoleBusy: another SOL session holds the host's serial console
// (Activate Payload completion code 80h).
var ErrConsoleBusy = errors.New("the host's serial console is in use by another SOL session")

// ConsoleOptions shape HostConsole.
type ConsoleOptions struct {
	// Force deactivates another session's SOL first (FreeIPMI ipmiconsole's
	// default; the BMC needs the SOL privilege for it).
	Force bool
	// PollInterval is how often an idle console asks the BMC for output
	// (go-ipmi's stream also takes what the BMC pushes). Default 100 ms.
	PollInterval time.Duration
	// OnActive is called once the console is up.
	OnActive func()
	// OnRestart is told when the stream is started again after err.
	OnRestart func(err error)
}

// HostConsole attaches in and out to host's serial console until in ends
// (io.EOF: the operator's escape), ctx ends, or the BMC deactivates the
// console. The SOL payload is deactivated on the way out.
func (c *Client) HostConsole(ctx context.Context, host string, in io.Reader, out io.Writer, o ConsoleOptions) error {
	if o.PollInterval <= 0 {
		o.PollInterval = 100 * time.Millisecond
	}
	return c.withBMCAs(ctx, host, true, func(s *client.Client) error {
		err := activateSOL(ctx, s)
		if ccIs(err, types.CodeActivatePayloadAlreadyActive) {
			if !o.Force {
				return fmt.Errorf("host %s: %w (--force takes it over)", host, ErrConsoleBusy)
			}
			if derr := deactivateSOL(ctx, s); derr != nil && !ccIs(derr, types.CodeDeactivatePayloadAlreadyDeactivated) {
				return fmt.Errorf("host %s: take over the serial console: %w", host, derr)
			}
			err = activateSOL(ctx, s)
		}
		if err != nil {
			return fmt.Errorf("host %s: activate Serial-over-LAN: %w", host, err)
		}
		defer func() {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			_ = deactivateSOL(dctx, s) // already gone when the BMC ended it
		}()
		if o.OnActive != nil {
			o.OnActive()
		}
		return streamSOL(ctx, s, host, in, out, o)
	})
}

// maxStreamRestarts bounds how often in a row a stream whose exchange
// failed is started again before the console gives up.
const maxStreamRestarts = 5

// streamSOL runs go-ipmi's SOL stream. Its packets are request/response
// exchanges with three tries each; a loaded BMC or network can miss them
// (seen in the lab under TCG with a load of 12), and go-ipmi then ends the
// stream although the payload is still ours: the stream starts again on the
// same activation (a keystroke being read at that moment is lost). The
// BMC's deactivation notice ends the console at once.
func streamSOL(ctx context.Context, s *client.Client, host string, in io.Reader, out io.Writer, o ConsoleOptions) error {
	restarts := 0
	for {
		start := time.Now()
		err := s.SOLStream(ctx, in, out, &client.SOLStreamOptions{PollInterval: o.PollInterval})
		switch {
		case err == nil || ctx.Err() != nil:
			return nil // the operator's escape (end of input), or the caller's end
		case strings.Contains(err.Error(), "SOL deactivation"):
			return fmt.Errorf("host %s: the BMC ended the serial console (deactivated by another session or idle)", host)
		}
		if !stillOurs(ctx, s) {
			return fmt.Errorf("host %s: the BMC ended the serial console (deactivated by another session, or idle)", host)
		}
		if time.Since(start) > time.Minute {
			restarts = 0
		}
		if restarts++; restarts > maxStreamRestarts {
			return fmt.Errorf("host %s: serial console ended: %w", host, err)
		}
		if o.OnRestart != nil {
			o.OnRestart(err)
		}
	}
}

// stillOurs reports whether the session still answers and the SOL payload
// is still active after a failed stream. go-ipmi's client drops the BMC's
// deactivation notice when it arrives between two exchanges (an ACK-only
// packet not echoing the pending request), and the BMC ends the session of
// a console it deactivated (docs/bmcsim.md), so a console that was ended
// only sees its exchanges time out: this tells that from a passing loss.
func stillOurs(ctx context.Context, s *client.Client) bool {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := s.GetPayloadActivationStatus(pctx, types.PayloadTypeSOL)
	return err == nil && st.Instance01Activated
}

func activateSOL(ctx context.Context, s *client.Client) error {
	_, err := s.ActivatePayload(ctx, &transport.ActivatePayloadRequest{
		PayloadType: types.PayloadTypeSOL, PayloadInstance: 1,
		EnableEncryption: true, EnableAuthentication: true,
	})
	return err
}

func deactivateSOL(ctx context.Context, s *client.Client) error {
	_, err := s.DeactivatePayload(ctx, &transport.DeactivatePayloadRequest{PayloadType: types.PayloadTypeSOL, PayloadInstance: 1})
	return err
}

func ccIs(err error, cc types.CompletionCode) bool {
	var re *types.ResponseError
	return errors.As(err, &re) && re.CompletionCode() == cc
}
