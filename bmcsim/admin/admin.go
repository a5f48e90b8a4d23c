// Package admin is bmcsim's simulation control: an HTTP API on a unix
// socket (mode 0600, the `admin` key of bmcsim's configuration) that drives
// what a real BMC would measure, for scenarios. It is no part of the BMC's
// IPMI interface: only a local user with access to the socket reaches it.
//
//	GET    /bmc/{bmc}/sensors            the sensors' readings (JSON)
//	PUT    /bmc/{bmc}/sensors/{sensor}   body {"value": 48}: pin a reading until released
//	DELETE /bmc/{bmc}/sensors/{sensor}   release it: it follows the host again
//
// {sensor} is the SDR name ("Inlet Temp", any case) or the sensor number.
// A pinned reading past a threshold adds its SEL entries at once.
package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ooblab/ooblab/bmcsim/sensors"
)

// Lookup finds a BMC's sensor model by the BMC's name.
type Lookup func(bmc string) (*sensors.Model, bool)

// Reading is one sensor in GET /bmc/{bmc}/sensors.
type Reading struct {
	Number uint8   `json:"number"`
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	// Asserted lists the asserted thresholds (lnc, lcr, lnr, unc, ucr, unr)
	// or, for Host Power, the state.
	Asserted []string `json:"asserted,omitempty"`
}

// PinRequest is the body of PUT /bmc/{bmc}/sensors/{sensor}.
type PinRequest struct {
	Value *float64 `json:"value"`
}

var thresholdNames = [6]string{"lnc", "lcr", "lnr", "unc", "ucr", "unr"}

// Handler serves the API.
func Handler(lookup Lookup, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	model := func(w http.ResponseWriter, r *http.Request) (*sensors.Model, bool) {
		m, ok := lookup(r.PathValue("bmc"))
		if !ok {
			http.Error(w, fmt.Sprintf("no BMC named %q", r.PathValue("bmc")), http.StatusNotFound)
		}
		return m, ok
	}
	sensor := func(w http.ResponseWriter, r *http.Request) (*sensors.Def, bool) {
		d, ok := FindSensor(r.PathValue("sensor"))
		if !ok {
			http.Error(w, fmt.Sprintf("no sensor %q (names: %s)", r.PathValue("sensor"), sensorNames()), http.StatusNotFound)
		} else if d.Discrete {
			http.Error(w, fmt.Sprintf("sensor %q is discrete: it follows the host's power state", d.Name), http.StatusBadRequest)
			return nil, false
		}
		return d, ok
	}
	// modelSensor is the BMC's model and the threshold sensor of a
	// /bmc/{bmc}/sensors/{sensor} request; it answers the error itself.
	modelSensor := func(w http.ResponseWriter, r *http.Request) (*sensors.Model, *sensors.Def, bool) {
		m, ok := model(w, r)
		if !ok {
			return nil, nil, false
		}
		d, ok := sensor(w, r)
		return m, d, ok
	}
	mux.HandleFunc("GET /bmc/{bmc}/sensors", func(w http.ResponseWriter, r *http.Request) {
		m, ok := model(w, r)
		if !ok {
			return
		}
		out := make([]Reading, 0, len(sensors.Defs))
		for i := range sensors.Defs {
			d := &sensors.Defs[i]
			rd, _ := m.Read(d.Number)
			x := Reading{Number: d.Number, Name: d.Name, Value: rd.Value}
			switch {
			case d.Discrete && rd.Status&(1<<sensors.StateWorking) != 0:
				x.Asserted = []string{"S0/G0 working"}
			case d.Discrete:
				x.Asserted = []string{"S5/G2 soft-off"}
			default:
				for t, n := range thresholdNames {
					if rd.Status&(1<<t) != 0 {
						x.Asserted = append(x.Asserted, n)
					}
				}
			}
			out = append(out, x)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
	mux.HandleFunc("PUT /bmc/{bmc}/sensors/{sensor}", func(w http.ResponseWriter, r *http.Request) {
		m, d, ok := modelSensor(w, r)
		if !ok {
			return
		}
		var req PinRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil || req.Value == nil ||
			math.IsNaN(*req.Value) || math.IsInf(*req.Value, 0) {
			http.Error(w, `want a body {"value": NUMBER}`, http.StatusBadRequest)
			return
		}
		m.Pin(d.Number, *req.Value)
		rd, _ := m.Read(d.Number)
		log.Info("sensor pinned (admin)", "bmc", r.PathValue("bmc"), "sensor", d.Name, "value", *req.Value, "reads", rd.Value)
		fmt.Fprintf(w, "%s pinned at %g\n", d.Name, rd.Value)
	})
	mux.HandleFunc("DELETE /bmc/{bmc}/sensors/{sensor}", func(w http.ResponseWriter, r *http.Request) {
		m, d, ok := modelSensor(w, r)
		if !ok {
			return
		}
		m.Release(d.Number)
		log.Info("sensor released (admin)", "bmc", r.PathValue("bmc"), "sensor", d.Name)
		fmt.Fprintf(w, "%s released\n", d.Name)
	})
	return mux
}

// FindSensor finds a sensor by SDR name (any case) or number.
func FindSensor(s string) (*sensors.Def, bool) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 256 {
		return sensors.Lookup(uint8(n))
	}
	for i := range sensors.Defs {
		if strings.EqualFold(sensors.Defs[i].Name, s) {
			return &sensors.Defs[i], true
		}
	}
	return nil, false
}

func sensorNames() string {
	var n []string
	for _, d := range sensors.Defs {
		if !d.Discrete {
			n = append(n, strconv.Quote(d.Name))
		}
	}
	return strings.Join(n, ", ")
}

// Listen opens the admin socket at path (a stale socket file is replaced),
// readable and writable by its owner only.
func Listen(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		_ = os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	// Connecting needs write permission on the socket file; the umask
	// (not changed here: it is the process's) has already kept it from
	// others unless it is 0.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	return ln, nil
}

// Serve serves h on ln until ctx ends.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	stop := context.AfterFunc(ctx, func() { _ = srv.Close() })
	defer stop()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin socket: %w", err)
	}
	return nil
}

// Client talks to the admin socket of a bmcsim process.
type Client struct {
	http *http.Client
}

// NewClient returns a client of the socket at path.
func NewClient(path string) *Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &Client{http: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

func (c *Client) do(ctx context.Context, method, path string, body any) (string, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return "", err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://bmcsim"+path, rd)
	if err != nil {
		return "", err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("bmcsim admin: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("bmcsim admin: %s", strings.TrimSpace(string(b)))
	}
	return string(b), nil
}

func sensorPath(bmc, sensor string) string {
	return "/bmc/" + url.PathEscape(bmc) + "/sensors/" + url.PathEscape(sensor)
}

// Pin pins a sensor's reading; it returns bmcsim's answer.
func (c *Client) Pin(ctx context.Context, bmc, sensor string, v float64) (string, error) {
	return c.do(ctx, http.MethodPut, sensorPath(bmc, sensor), PinRequest{Value: &v})
}

// Release lets a sensor follow its host again.
func (c *Client) Release(ctx context.Context, bmc, sensor string) (string, error) {
	return c.do(ctx, http.MethodDelete, sensorPath(bmc, sensor), nil)
}

// Readings returns a BMC's sensor readings.
func (c *Client) Readings(ctx context.Context, bmc string) ([]Reading, error) {
	s, err := c.do(ctx, http.MethodGet, "/bmc/"+url.PathEscape(bmc)+"/sensors", nil)
	if err != nil {
		return nil, err
	}
	var out []Reading
	return out, json.Unmarshal([]byte(s), &out)
}
