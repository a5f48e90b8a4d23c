// Command hvagent runs on a hypervisor host: it serves sealed VM requests
// from the management server on two channels, the OOB-I (BMC queues over the
// system interface) and the VMM-I (TLS on the management network), checks
// them against the authorization list, and executes them through libvirt.
// See docs/hvagent.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ooblab/ooblab/hvagent/run"
)

func main() {
	var o run.Options
	flag.StringVar(&o.HostID, "host-id", "", "this host's id (must match the key's; default: the key's)")
	flag.StringVar(&o.KeyFile, "key", "/etc/ooblab/hvagent.key", "host key file: otpauth:// URI, mode 0600")
	flag.StringVar(&o.PolicyFile, "policy", "/etc/ooblab/authz.toml", "authorization list (TOML); SIGHUP reloads it")
	flag.StringVar(&o.LibvirtURI, "libvirt", "qemu:///system", "libvirt URI")
	flag.StringVar(&o.Sysif, "sysif", "", "system interface for the OOB-I: dev:/dev/ipmi0 or chardev:HOST:PORT (empty: no OOB-I)")
	flag.StringVar(&o.VMMIAddr, "vmmi", "", "VMM-I TLS listen address, e.g. :7443 (empty: no VMM-I)")
	flag.StringVar(&o.TLSCert, "tls-cert", "/etc/ooblab/hvagent.pem", "VMM-I certificate (PEM)")
	flag.StringVar(&o.TLSKey, "tls-key", "/etc/ooblab/hvagent-key.pem", "VMM-I private key (PEM, mode 0600)")
	flag.StringVar(&o.TLSClientCA, "tls-client-ca", "/etc/ooblab/client-ca.pem", "CA certificate(s) that issue the VMS principals' client certificates (PEM)")
	flag.StringVar(&o.JournalFile, "journal", "/var/lib/ooblab/hvagent.journal", "request-id journal file")
	flag.DurationVar(&o.JournalRetention, "journal-retention", 24*time.Hour, "how long the journal remembers a request id (at least 10m): the VMS issue-time window plus its longest retry of one id")
	flag.StringVar(&o.AlertHook, "alert-hook", "", "shell command run for each alert (JSON on stdin, OOBLAB_ALERT_* env)")
	flag.DurationVar(&o.PollInterval, "poll-interval", time.Second, "Queue 1 poll interval when the BMC raises no attention")
	iana := flag.Uint("iana", 32473, "IANA enterprise number of the OEM queue commands")
	logLevel := flag.String("log-level", "info", "debug, info, warn or error")
	startFile := flag.String("start-vms", "", "file naming domains (one per line) the agent starts itself, in the background; the file is removed once read, so a restarted agent does not start them again")
	flag.Parse()
	o.IANA = uint32(*iana)
	if *startFile != "" {
		b, err := os.ReadFile(*startFile)
		if err != nil && !errors.Is(err, fs.ErrNotExist) { // gone: consumed by an earlier start
			fmt.Fprintln(os.Stderr, "hvagent: --start-vms:", err)
			os.Exit(2)
		}
		o.StartVMs = strings.Fields(string(b))
		if err := os.Remove(*startFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintln(os.Stderr, "hvagent: --start-vms: the list must be removable (it is consumed once):", err)
			os.Exit(2)
		}
	}

	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "hvagent: --log-level:", err)
		os.Exit(2)
	}
	o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run.Run(ctx, o); err != nil {
		o.Logger.Error("hvagent failed", "err", err)
		os.Exit(1)
	}
}
