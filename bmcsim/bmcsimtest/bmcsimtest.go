// Package bmcsimtest runs an in-process bmcsim BMC for tests and benchmarks:
// the program's own app.NewHost (LAN channel, OOB-I queues, Queue1Notify
// pushes, system interface), on loopback ports picked by the kernel. Tests
// thus exercise the BMC users run, not a hand-built look-alike.
package bmcsimtest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"

	"github.com/ooblab/ooblab/bmcsim/app"
	"github.com/ooblab/ooblab/bmcsim/config"
)

// Options shape the BMC; zero values give the program's defaults.
type Options struct {
	// Name of the BMC (default "h1").
	Name string
	// Users; default one operator "vms" with a random password (see BMC.User).
	Users []config.User
	// NoKCS leaves out the system interface.
	NoKCS bool
	// NoSerial leaves out the serial port (SOL).
	NoSerial bool
	// Redfish adds the Redfish service (HTTPS, self-signed; RedfishURL and
	// RedfishClient reach it).
	Redfish bool
	// State is the queue journal folder; "" keeps queues in memory.
	State string
	// Queue1Capacity and Queue2Capacity in records (0: the default).
	Queue1Capacity, Queue2Capacity int
	// Config, when set, edits the configuration last (lockout knobs, suites…).
	Config func(*config.Config)
	// BeforeServe, when set, runs after the BMC is built and before it
	// serves: the place to wrap handlers of its Registry.
	BeforeServe func(*app.Host)
	Logger      *slog.Logger
}

// BMC is a running in-process bmcsim BMC.
type BMC struct {
	*app.Host
	// LAN is the RMCP+ address, "127.0.0.1:PORT".
	LAN string
	// Port is LAN's port.
	Port int
	// RedfishURL is "https://127.0.0.1:PORT" with Options.Redfish.
	RedfishURL string
	// User is the first configured user (name, password, privilege).
	User config.User

	cancel  context.CancelFunc
	done    chan error
	stop    sync.Once
	stopErr error
}

// Start builds the BMC, serves it until the test ends, then stops it and
// reports a Serve error.
func Start(t testing.TB, o Options) *BMC {
	t.Helper()
	b, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Stop(); err != nil {
			t.Errorf("bmcsimtest: %v", err)
		}
	})
	return b
}

// New builds and serves the BMC; Stop ends it. For callers without a
// testing.TB (benchmark programs).
func New(o Options) (*BMC, error) {
	cfg := config.Config{Name: o.Name, LAN: "127.0.0.1:0", State: o.State, Users: o.Users,
		Queue1Capacity: o.Queue1Capacity, Queue2Capacity: o.Queue2Capacity}
	if cfg.Name == "" {
		cfg.Name = "h1"
	}
	if !o.NoKCS {
		cfg.KCS = "127.0.0.1:0"
	}
	if !o.NoSerial {
		cfg.Serial = "127.0.0.1:0"
	}
	if o.Redfish {
		cfg.Redfish = "127.0.0.1:0"
	}
	if len(cfg.Users) == 0 {
		pw := make([]byte, 8)
		_, _ = rand.Read(pw)
		cfg.Users = []config.User{{Name: "vms", Password: hex.EncodeToString(pw), Privilege: "operator"}}
	}
	if o.Config != nil {
		o.Config(&cfg)
	}
	h, err := app.NewHost(cfg, app.HostOptions{Logger: o.Logger})
	if err != nil {
		return nil, fmt.Errorf("bmcsimtest: %w", err)
	}
	if o.BeforeServe != nil {
		o.BeforeServe(h)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &BMC{Host: h, User: h.BMC.Config.Users[0], cancel: cancel, done: make(chan error, 1)}
	b.LAN = h.LANAddr().String()
	if a := h.RedfishAddr(); a != "" {
		b.RedfishURL = "https://" + a
	}
	b.Port = h.LANAddr().Port
	go func() { b.done <- h.Serve(ctx) }()
	return b, nil
}

// Stop ends Serve, waits for it and closes the queues; it may be called
// more than once (a test restarting a BMC from its State, then Cleanup).
func (b *BMC) Stop() error {
	b.stop.Do(func() {
		b.cancel()
		b.stopErr = <-b.done
		if err := b.Host.Close(); b.stopErr == nil {
			b.stopErr = err
		}
	})
	return b.stopErr
}

// UDPAddr is the LAN channel's address.
func (b *BMC) UDPAddr() *net.UDPAddr { return b.LANAddr() }

// RedfishClient is an HTTPS client that trusts exactly the BMC's Redfish
// certificate.
func (b *BMC) RedfishClient() *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(b.RedfishCert)
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: 128,
	}}
}
