// Command bmcsim runs one or more simulated BMCs: IPMI v2.0 over LAN (RMCP+)
// for ipmitool and FreeIPMI, and QEMU's ipmi-bmc-extern system interface.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/ooblab/ooblab/bmcsim/app"
	"github.com/ooblab/ooblab/bmcsim/config"
)

type userFlags []config.User

func (u *userFlags) String() string { return fmt.Sprint(len(*u), " users") }
func (u *userFlags) Set(s string) error {
	v, err := config.ParseUserFlag(s)
	if err != nil {
		return err
	}
	*u = append(*u, v)
	return nil
}

func main() {
	var (
		cfgPath  = flag.String("config", "", "TOML file describing one or more BMCs")
		c        config.Config
		users    userFlags
		metrics  = flag.String("metrics", "", "serve Prometheus metrics on ADDR (e.g. 127.0.0.1:9120)")
		logLevel = flag.String("log-level", "info", "debug, info, warn or error")
		pprofOn  = flag.Bool("pprof", false, "also serve Go's profiler under /debug/pprof/ on the --metrics address")
		procs    = flag.Int("procs", 1, "Go threads running at once (GOMAXPROCS; the environment variable wins when set)")
		fleet    = flag.Int("fleet", 0, "serve N BMCs named NAME-0 … NAME-(N-1) on --lan's port … port+N-1 (and --kcs's likewise)")
	)
	flag.StringVar(&c.Name, "name", "bmc0", "name of the BMC (log and metric label)")
	flag.StringVar(&c.LAN, "lan", "", "UDP address of the IPMI LAN channel, e.g. 127.0.0.1:6230")
	flag.StringVar(&c.KCS, "kcs", "", "TCP address for QEMU's ipmi-bmc-extern chardev, e.g. 127.0.0.1:9002")
	flag.StringVar(&c.Serial, "serial", "", "TCP address for QEMU's serial (ttyS0) socket chardev, carried as Serial-over-LAN, e.g. 127.0.0.1:9003")
	flag.StringVar(&c.Redfish, "redfish", "", "TCP address of the Redfish service (HTTPS only), e.g. 127.0.0.1:8443; with --fleet N ports PORT..PORT+N-1")
	flag.StringVar(&c.RedfishCert, "redfish-cert", "", "PEM certificate of the Redfish service (default: a self-signed ECDSA one, its SHA-256 fingerprint logged)")
	flag.StringVar(&c.RedfishKey, "redfish-key", "", "PEM key of --redfish-cert (a file only its owner may read)")
	flag.StringVar(&c.SOLPrivilege, "sol-privilege", config.DefaultSOLPrivilege, "least privilege that may activate SOL (user, operator or administrator)")
	flag.BoolVar(&c.SystemInterfaceAdmin, "system-interface-admin", false, "let the host's system interface (KCS) change LAN users, channel access, LAN/SOL configuration and erase the SEL")
	flag.DurationVar(&c.SOLIdleTimeout.Duration, "sol-idle-timeout", config.DefaultSOLIdleTimeout, "deactivate a SOL session after this long without a byte either way")
	flag.StringVar(&c.State, "state", "", "folder journaling the OOB-I queues across restarts")
	flag.Var(&users, "user", "NAME:@PASSWORD_FILE[:administrator|operator|user] (repeatable; the file mode 0600; a password in the flag itself is refused)")
	flag.IntVar(&c.SessionLimit, "session-limit", config.DefaultSessionLimit, "concurrent RMCP+ sessions")
	flag.DurationVar(&c.SessionTimeout.Duration, "session-timeout", config.DefaultSessionTimeout, "idle session expiry")
	flag.IntVar(&c.LockoutAttempts, "lockout-attempts", config.DefaultLockoutAttempts, "Bad Password Threshold: failed or unfinished logins of a source before it backs off, and of a user before sources with failures are slowed (nobody is locked out)")
	flag.DurationVar(&c.LockoutDuration.Duration, "lockout-duration", config.DefaultLockoutDuration, "User Lockout Interval: how long a user stays slowed down after reaching the threshold")
	flag.DurationVar(&c.LoginBackoffMax.Duration, "login-backoff-max", config.DefaultLoginBackoffMax, "the longest any login is made to wait by the backoff or a slowdown (at most 10s)")
	flag.DurationVar(&c.ReaderTTL.Duration, "reader-ttl", time.Minute, "forget a Queue 2 reader (VMS requester id) idle this long and evict its records")
	flag.DurationVar(&c.FollowerTTL.Duration, "follower-ttl", 24*time.Hour, "keep the alert log cursor of a durable follower (vmsctl alerts --follower-id) idle this long; other followers go after --reader-ttl")
	flag.IntVar(&c.SourceHandshakeLimit, "source-handshake-limit", config.DefaultSourceHandshakeLimit,
		"RAKP 1s naming unknown users or repeated on a pending handshake one source IP may send per minute")
	iana := flag.Uint("iana", config.DefaultIANA, "IANA enterprise number of the OEM queue commands")
	flag.Parse()
	c.IANA = uint32(*iana)
	// go-ipmi's server starts a goroutine per datagram; with more than one P
	// they contend on the runtime's and the sessions' locks. Measured on 2
	// cores (make bench, suite 3): 1 P serves 1.2-1.4x the requests/s of 2
	// with a third of the p99.
	if os.Getenv("GOMAXPROCS") == "" && *procs > 0 {
		runtime.GOMAXPROCS(*procs)
	}

	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "bmcsim: --log-level:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))

	file := &config.File{Metrics: *metrics, Pprof: *pprofOn}
	if *cfgPath != "" {
		f, err := config.LoadFile(*cfgPath)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bmcsim:", err)
			os.Exit(2)
		}
		file = f
		if *metrics != "" {
			file.Metrics = *metrics
		}
		file.Pprof = file.Pprof || *pprofOn
	}
	if *fleet > 0 {
		if *cfgPath != "" {
			fmt.Fprintln(os.Stderr, "bmcsim: --fleet and --config do not mix: list the BMCs in the file, or give --fleet with --lan")
			os.Exit(2)
		}
		if !isFlagSet("name") {
			c.Name = "bmc"
		}
		c.Users = users
		cs, err := config.Fleet(c, *fleet)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bmcsim:", err)
			os.Exit(2)
		}
		file.BMCs = cs
	} else if c.LAN != "" || len(users) > 0 {
		c.Users = users
		file.BMCs = append(file.BMCs, c)
	}
	for i := range file.BMCs {
		if err := file.BMCs[i].Normalize(); err != nil {
			fmt.Fprintln(os.Stderr, "bmcsim:", err)
			os.Exit(2)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	if err := app.Run(ctx, file, log); err != nil {
		log.Error("bmcsim stopped", "err", err)
		os.Exit(1)
	}
	log.Info("bmcsim stopped", "uptime", time.Since(start).Round(time.Second).String())
}

// isFlagSet reports whether the command line gave flag name.
func isFlagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
