// Command vmsctl drives VMs on ooblab hypervisor hosts over the VMM-I or,
// through each host's BMC, the OOB-I. See docs/vmsctl.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/ooblab/ooblab/vmsctl/cmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cmd.Run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}
