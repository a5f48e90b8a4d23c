//go:build goipmi

package main

import (
	"context"
	"net"
	"strconv"
	"time"

	"github.com/bougou/go-ipmi/pkg/client"
	"github.com/bougou/go-ipmi/pkg/types"
)

type goipmiReq struct{ c *client.Client }

func (g goipmiReq) getDeviceID(ctx context.Context) error {
	_, err := g.c.GetDeviceID(ctx)
	return err
}
func (g goipmiReq) close(ctx context.Context) error { return g.c.Close(ctx) }

func init() {
	dialers["goipmi"] = func(ctx context.Context, t target, user, pass string, timeout time.Duration) (requester, error) {
		host, port, _ := net.SplitHostPort(t.addr)
		p, _ := strconv.Atoi(port)
		c, err := client.NewClient(host, p, user, pass)
		if err != nil {
			return nil, err
		}
		c.WithCipherSuiteID(types.CipherSuiteID(t.suite)).WithTimeout(timeout).WithRetry(0)
		if err := c.Connect(ctx); err != nil {
			return nil, err
		}
		return goipmiReq{c}, nil
	}
}
