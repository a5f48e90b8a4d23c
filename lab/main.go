// Command lab brings up and controls the ooblab lab: simulated BMCs (one
// bmcsim process) and one QEMU hypervisor-host guest per host, with libvirt
// and hvagent inside. See docs/lab.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/ooblab/ooblab/lab/cmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := cmd.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
