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
	// (go-ipmi's stream also takes what the BMC pushes). Default 50 ms.
	PollInterval time.Duration
	// OnActive is called once the console is up.
	OnActive func()
}

// HostConsole attaches in and out to host's serial console until in ends
// (io.EOF: the operator's escape), ctx ends, or the BMC deactivates the
// console. The SOL payload is deactivated on the way out.
func (c *Client) HostConsole(ctx context.Context, host string, in io.Reader, out io.Writer, o ConsoleOptions) error {
	if o.PollInterval <= 0 {
		o.PollInterval = 50 * time.Millisecond
	}
	return c.withBMC(ctx, host, func(s *client.Client) error {
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
		err = s.SOLStream(ctx, in, out, &client.SOLStreamOptions{PollInterval: o.PollInterval})
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("host %s: serial console ended: %w", host, err)
		}
		return nil
	})
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
