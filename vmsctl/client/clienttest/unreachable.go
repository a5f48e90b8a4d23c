package clienttest

import (
	"context"
	"fmt"

	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

// Unreachable is a Handle for a host the channel never reaches (no
// connection, no BMC session): it waits for ctx to end and says the
// request was not delivered.
func Unreachable(ctx context.Context, host string, req *vmsg.Request) (vmsg.Message, error) {
	<-ctx.Done()
	return nil, fmt.Errorf("%w: clienttest: host not reached: %w", client.ErrNotDelivered, ctx.Err())
}

// Lost is a Handle for a request that reached the host (the BMC accepted
// it, or its frame was written) and whose answer never came: it waits for
// ctx to end.
func Lost(ctx context.Context, host string, req *vmsg.Request) (vmsg.Message, error) {
	<-ctx.Done()
	return nil, fmt.Errorf("%w: clienttest: answer lost: %w", client.ErrNoAnswer, ctx.Err())
}
