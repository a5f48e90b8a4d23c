package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/stmcginnis/gofish"

	"github.com/ooblab/ooblab/internal/fileio"
	"github.com/ooblab/ooblab/internal/oem"
)

// OOB-I transports (OOBOptions.Transport).
const (
	TransportIPMI    = "ipmi"    // OEM commands over RMCP+ (default: the paper's path)
	TransportRedfish = "redfish" // the same commands as the BMC Manager's OEM action over HTTPS
)

// ViaOOBRedfish is Answer.Via for the OOB-I over Redfish.
const ViaOOBRedfish = ViaOOB + " (redfish)"

// queueActionPath is the BMC's OEM action that runs one queue command
// (docs/oob-i.md, "The OOB-I over Redfish").
const queueActionPath = "/redfish/v1/Managers/1/Actions/Oem/OoblabManager.QueueCommand"

// redfishConns holds one gofish client per host.
type redfishConns struct {
	mu sync.Mutex
	c  map[string]*gofish.APIClient
}

// redfishClient connects (once per host) to t's BMC Redfish service as the
// inventory's BMC user with HTTP Basic, trusting bmc.redfish_ca_file.
func (o *OOB) redfishClient(ctx context.Context, t *Target) (*gofish.APIClient, error) {
	o.rf.mu.Lock()
	defer o.rf.mu.Unlock()
	if c := o.rf.c[t.Name()]; c != nil {
		return c, nil
	}
	b := t.Host.BMC
	if b.Redfish == "" {
		return nil, fmt.Errorf("%w: host %s: no bmc.redfish in the inventory (--oob-transport redfish)", ErrNotDelivered, t.Name())
	}
	u, err := url.Parse(b.Redfish)
	if err != nil || u.Scheme != "https" {
		return nil, fmt.Errorf("%w: host %s bmc.redfish %q: want an https URL", ErrNotDelivered, t.Name(), b.Redfish)
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if b.RedfishCAFile != "" {
		pem, err := os.ReadFile(t.Path(b.RedfishCAFile))
		if err != nil {
			return nil, fmt.Errorf("%w: host %s BMC Redfish CA: %w", ErrNotDelivered, t.Name(), err)
		}
		tlsCfg.RootCAs = x509.NewCertPool()
		if !tlsCfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: host %s BMC Redfish CA %s: no certificate", ErrNotDelivered, t.Name(), b.RedfishCAFile)
		}
	}
	var pass string
	if b.PasswordFile != "" {
		p, err := fileio.ReadSecret(t.Path(b.PasswordFile))
		if err != nil {
			return nil, fmt.Errorf("host %s BMC password: %w", t.Name(), err)
		}
		pass = strings.TrimRight(string(p), "\r\n")
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg, MaxIdleConnsPerHost: o.opt.Window,
		ForceAttemptHTTP2: true}, Timeout: redfishTimeout}
	c, err := gofish.ConnectContext(ctx, gofish.ClientConfig{Endpoint: u.Scheme + "://" + u.Host, Username: b.User, Password: pass,
		BasicAuth: true, HTTPClient: hc, NoModifyTransport: true, ReuseConnections: true,
		MaxConcurrentRequests: int64(o.opt.Window) + 1})
	if err != nil {
		return nil, fmt.Errorf("%w: oob-i over Redfish to BMC %s: %w", ErrNotDelivered, b.Redfish, err)
	}
	if o.rf.c == nil {
		o.rf.c = map[string]*gofish.APIClient{}
	}
	o.rf.c[t.Name()] = c
	return c, nil
}

// rawRedfish is raw over Redfish: one POST of the OEM action; a non-zero
// completion code is an *oem.Error, as over IPMI.
func (o *OOB) rawRedfish(ctx context.Context, t *Target, cmd oem.Cmd, data []byte) ([]byte, error) {
	c, err := o.redfishClient(ctx, t)
	if err != nil {
		return nil, err
	}
	resp, err := c.WithContext(ctx).Post(queueActionPath, map[string]any{"Command": int(cmd), "Data": data})
	if err != nil {
		if resp != nil {
			resp.Body.Close()
		}
		var ne *net.OpError
		if errors.As(err, &ne) && ne.Op == "dial" {
			return nil, fmt.Errorf("%w: oob-i %s over Redfish to BMC %s: %w", ErrNotDelivered, cmd, t.Host.BMC.Redfish, err)
		}
		if strings.Contains(err.Error(), "401") || strings.Contains(err.Error(), "403") {
			return nil, fmt.Errorf("%w: oob-i %s over Redfish to BMC %s: %w", ErrUnauthorized, cmd, t.Host.BMC.Redfish, err)
		}
		return nil, fmt.Errorf("oob-i %s over Redfish to BMC %s: %w", cmd, t.Host.BMC.Redfish, err)
	}
	defer resp.Body.Close()
	var out struct {
		CompletionCode uint8
		Data           []byte
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&out); err != nil {
		return nil, fmt.Errorf("oob-i %s over Redfish to BMC %s: answer: %w", cmd, t.Host.BMC.Redfish, err)
	}
	if out.CompletionCode != 0 {
		return nil, &oem.Error{Cmd: cmd, Code: oem.CompletionCode(out.CompletionCode)}
	}
	return out.Data, nil
}

// closeRedfish ends the Redfish clients' idle connections.
func (o *OOB) closeRedfish() {
	o.rf.mu.Lock()
	defer o.rf.mu.Unlock()
	for _, c := range o.rf.c {
		c.HTTPClient.CloseIdleConnections()
	}
	o.rf.c = nil
}

// redfishTimeout bounds one HTTPS exchange (the caller's context bounds
// the whole request).
const redfishTimeout = 10 * time.Second
