// Package ui is the lab's web page (`bin/lab ui`): the failover demo made
// visible. It is a VMS like vmsctl — it drives the hosts through vmsctl's
// Go package with the lab's inventory, keys and channels, never a second
// path into a host — and shows, live over server-sent events, each host's
// two channels (VMM-I and OOB-I, up or down with their latency), its power,
// its VMs, the commands run from the page and the alerts that arrive.
//
// Access: the server listens on loopback only and every request but the
// static files needs the lab's random token — in the URL for the page and
// its event stream (as notebook servers do), in the X-Lab-Token header for
// actions. Actions are POSTs with a JSON body: a cross-site page can send
// neither the header nor that content type without a CORS preflight, which
// this server never grants, so they are CSRF-safe; an Origin header from
// another origin is refused as well.
package ui

import (
	"context"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/ooblab/ooblab/internal/inventory"
	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

//go:embed static
var static embed.FS

// Config is what the page serves.
type Config struct {
	Inventory *inventory.Inventory
	// Token is the lab's page token (random, per lab).
	Token string
	// SetLink plugs or unplugs host's VMM-I (the lab's QMP set_link).
	SetLink func(ctx context.Context, host string, up bool) error
	// Poll is how often each host's channels, VMs and power are read
	// (default 2 s; the OOB-I and power every second poll).
	Poll time.Duration
	// Timeout bounds one command from the page (default 60 s).
	Timeout time.Duration
	// Protected tells which VMs a host's policy protects (a challenge
	// wants the operator's app code), for the page's mark; nil: marked once
	// a challenge meets the page.
	Protected func(host, vm string) bool
	// Clients replace the real channels (tests); keyed auto, vmm-i, oob-i.
	Clients map[string]*client.Client
	Logger  *slog.Logger
}

// Server serves the page and runs its poller.
type Server struct {
	cfg     Config
	log     *slog.Logger
	clients map[string]*client.Client
	mux     *http.ServeMux

	mu   sync.Mutex
	st   State
	subs map[chan struct{}]struct{}
	// selSeen: per host, the SEL's newest entry shown (a cleared or
	// restarted log starts again).
	selSeen map[string]selMark
	// hostLocks: host name → *sync.Mutex, one poll of a host at a time.
	hostLocks sync.Map
}

// State is what the page shows, sent whole on every change.
type State struct {
	Hosts    []*HostView   `json:"hosts"`
	Commands []*CommandRow `json:"commands"`
	Alerts   []AlertRow    `json:"alerts"`
	// SEL is the BMCs' event log entries seen since the page started,
	// newest first.
	SEL     []SELRow `json:"sel"`
	Version uint64   `json:"version"`
}

// HostView is one host.
type HostView struct {
	Name  string      `json:"name"`
	VMMI  ChannelView `json:"vmmi"`
	OOB   ChannelView `json:"oob"`
	Power string      `json:"power"` // "on", "off", "unknown"
	// Link is the VMM-I cable as the page last set it ("plugged",
	// "unplugged", or "" when the page has not touched it).
	Link string   `json:"link"`
	VMs  []VMView `json:"vms"`
	// Sensors are the BMC's temperature and power readings, where it has
	// sensors.
	Sensors []SensorView `json:"sensors"`
	// VMsVia is the channel the last VM list came over.
	VMsVia string `json:"vms_via"`
	Error  string `json:"error,omitempty"`
}

// ChannelView is one channel of a host.
type ChannelView struct {
	Up        bool      `json:"up"`
	LatencyMs float64   `json:"latency_ms"`
	History   []float64 `json:"history"` // last latencies, -1 for a failure
	Error     string    `json:"error,omitempty"`
	Checked   time.Time `json:"checked"`
}

// VMView is one VM.
type VMView struct {
	Name      string `json:"name"`
	State     string `json:"state"`
	VCPUs     uint32 `json:"vcpus"`
	MemoryMiB uint64 `json:"memory_mib"`
	UptimeSec uint64 `json:"uptime_sec"`
	Protected bool   `json:"protected"`
}

// SensorView is one reading of a host's BMC.
type SensorView struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
	Status string  `json:"status"`
}

// CommandRow is one command run from the page.
type CommandRow struct {
	Time      time.Time `json:"time"`
	Who       string    `json:"who"`
	Host      string    `json:"host"`
	What      string    `json:"what"`
	Asked     string    `json:"asked_via"`
	Via       string    `json:"via"`
	LatencyMs float64   `json:"latency_ms"`
	Outcome   string    `json:"outcome"`
	OK        bool      `json:"ok"`
	RequestID string    `json:"request_id,omitempty"`
	// NeedsCode is set when a protected VM's challenge wants the
	// operator's app code.
	NeedsCode bool `json:"needs_code,omitempty"`
}

// SELRow is one entry of a host BMC's event log.
type SELRow struct {
	Time  time.Time `json:"time"`
	Host  string    `json:"host"`
	ID    uint16    `json:"id"`
	Event string    `json:"event"`
}

// AlertRow is one alert from a host.
type AlertRow struct {
	Time      time.Time `json:"time"`
	Host      string    `json:"host"`
	Principal string    `json:"principal"`
	Action    string    `json:"action"`
	VM        string    `json:"vm"`
	Reason    string    `json:"reason"`
}

const (
	historyLen  = 30
	maxCommands = 200
	maxAlerts   = 200
	maxSEL      = 200
	maxBody     = 4 << 10
)

// New builds a Server over cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Inventory == nil || len(cfg.Inventory.Hosts) == 0 {
		return nil, errors.New("ui: an inventory with hosts is needed")
	}
	if len(cfg.Token) < 16 {
		return nil, errors.New("ui: the token must be at least 16 characters")
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 2 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, subs: map[chan struct{}]struct{}{}, selSeen: map[string]selMark{}}
	s.clients = cfg.Clients
	if s.clients == nil {
		s.clients = map[string]*client.Client{}
		for _, via := range []string{client.ViaAuto, client.ViaVMMI, client.ViaOOB} {
			c, err := client.New(cfg.Inventory, client.Options{Via: via, Logger: cfg.Logger, Challenge: s.challenge,
				Metadata: map[string]string{"via_ui": "lab ui"}})
			if err != nil {
				s.Close()
				return nil, err
			}
			s.clients[via] = c
		}
	}
	for _, h := range cfg.Inventory.Hosts {
		s.st.Hosts = append(s.st.Hosts, &HostView{Name: h.Name, Power: "unknown"})
	}
	s.routes()
	return s, nil
}

// Close closes the clients.
func (s *Server) Close() {
	for _, c := range s.clients {
		_ = c.Close()
	}
}

func (s *Server) routes() {
	sub, _ := fs.Sub(static, "static")
	m := http.NewServeMux()
	m.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(sub)))
	m.HandleFunc("GET /{$}", s.withToken(s.page))
	m.HandleFunc("GET /api/state", s.withToken(s.getState))
	m.HandleFunc("GET /api/events", s.withToken(s.events))
	m.HandleFunc("POST /api/link", s.action(s.postLink))
	m.HandleFunc("POST /api/vm", s.action(s.postVM))
	m.HandleFunc("POST /api/power", s.action(s.postPower))
	s.mux = m
}

// ServeHTTP serves the page and its API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Referrer-Policy", "no-referrer") // the token is in the URL
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
	s.mux.ServeHTTP(w, r)
}

func (s *Server) tokenOK(got string) bool {
	return subtle.ConstantTimeCompare([]byte(got), []byte(s.cfg.Token)) == 1
}

// withToken wraps a read: the token in the URL's query.
func (s *Server) withToken(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.tokenOK(r.URL.Query().Get("token")) {
			httpError(w, http.StatusForbidden, "missing or wrong token: open the URL `lab up` printed")
			return
		}
		h(w, r)
	}
}

// action wraps a POST: token header, JSON body, same origin, size bound.
func (s *Server) action(h func(context.Context, *http.Request, []byte) (any, int, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.tokenOK(r.Header.Get("X-Lab-Token")) {
			httpError(w, http.StatusForbidden, "missing or wrong X-Lab-Token")
			return
		}
		if o := r.Header.Get("Origin"); o != "" {
			if u, err := url.Parse(o); err != nil || u.Host != r.Host {
				httpError(w, http.StatusForbidden, "cross-origin request refused")
				return
			}
		}
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			httpError(w, http.StatusUnsupportedMediaType, "want Content-Type application/json")
			return
		}
		body, err := readBody(w, r)
		if err != nil {
			httpError(w, http.StatusRequestEntityTooLarge, err.Error())
			return
		}
		out, code, err := h(r.Context(), r, body)
		if err != nil {
			httpError(w, code, err.Error())
			return
		}
		writeJSON(w, code, out)
	}
}

func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	var b []byte
	buf := make([]byte, 1024)
	for {
		n, err := r.Body.Read(buf)
		b = append(b, buf[:n]...)
		if err != nil {
			var mb *http.MaxBytesError
			if errors.As(err, &mb) {
				return nil, fmt.Errorf("body over %d bytes", maxBody)
			}
			return b, nil
		}
	}
}

func httpError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) page(w http.ResponseWriter, r *http.Request) {
	b, err := static.ReadFile("static/index.html")
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(b)
}

func (s *Server) snapshot() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, _ := json.Marshal(&s.st)
	return b
}

func (s *Server) getState(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(s.snapshot())
}

// events streams the state: once at once, then on every change (at most a
// few times a second), with a comment every 15 s to keep proxies open.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		httpError(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	s.subs[ch] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.subs, ch)
		s.mu.Unlock()
	}()
	send := func() bool {
		_, err := fmt.Fprintf(w, "event: state\ndata: %s\n\n", s.snapshot())
		fl.Flush()
		return err == nil
	}
	if !send() {
		return
	}
	keep := time.NewTicker(15 * time.Second)
	defer keep.Stop()
	limit := time.NewTicker(200 * time.Millisecond)
	defer limit.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-keep.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
			fl.Flush()
		case <-ch:
			select { // coalesce a burst of changes
			case <-limit.C:
			case <-r.Context().Done():
				return
			}
			if !send() {
				return
			}
		}
	}
}

// changed bumps the version and wakes every stream. Call with s.mu held.
func (s *Server) changed() {
	s.st.Version++
	for ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (s *Server) host(name string) (*HostView, error) {
	for _, h := range s.st.Hosts {
		if h.Name == name {
			return h, nil
		}
	}
	return nil, fmt.Errorf("unknown host %q", name)
}

var vmName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$`)

type linkReq struct {
	Host string `json:"host"`
	Up   *bool  `json:"up"`
}

func (s *Server) postLink(ctx context.Context, r *http.Request, body []byte) (any, int, error) {
	var q linkReq
	h, code, err := s.decodeFor(body, &q, &q.Host)
	if err != nil {
		return nil, code, err
	}
	if q.Up == nil {
		return nil, http.StatusBadRequest, errors.New(`"up" (true or false) is required`)
	}
	if s.cfg.SetLink == nil {
		return nil, http.StatusNotImplemented, errors.New("this page cannot plug or unplug links")
	}
	what := "unplug VMM-I"
	if *q.Up {
		what = "plug VMM-I"
	}
	t0 := time.Now()
	err = s.cfg.SetLink(ctx, q.Host, *q.Up)
	row := &CommandRow{Time: t0, Who: "lab", Host: q.Host, What: what, Via: "qmp", LatencyMs: ms(time.Since(t0)), OK: err == nil, Outcome: "ok"}
	if err != nil {
		row.Outcome = err.Error()
	}
	s.mu.Lock()
	if err == nil {
		h.Link = map[bool]string{true: "plugged", false: "unplugged"}[*q.Up]
	}
	s.addCommand(row)
	s.mu.Unlock()
	go s.pollHost(context.WithoutCancel(ctx), q.Host, true)
	return row, http.StatusOK, nil
}

type vmReq struct {
	Host   string `json:"host"`
	VM     string `json:"vm"`
	Action string `json:"action"`
	Via    string `json:"via"`
	Code   string `json:"code"`
}

var vmActions = map[string]vmsg.Command{
	"start": vmsg.CmdStart, "shutdown": vmsg.CmdShutdown, "destroy": vmsg.CmdDestroy,
	"reboot": vmsg.CmdReboot, "suspend": vmsg.CmdSuspend, "resume": vmsg.CmdResume, "status": vmsg.CmdStatus,
}

var vias = map[string]string{"": client.ViaAuto, "auto": client.ViaAuto, "vmmi": client.ViaVMMI, client.ViaVMMI: client.ViaVMMI,
	"oob": client.ViaOOB, client.ViaOOB: client.ViaOOB}

type codeKey struct{}

func (s *Server) postVM(ctx context.Context, r *http.Request, body []byte) (any, int, error) {
	var q vmReq
	if _, code, err := s.decodeFor(body, &q, &q.Host); err != nil {
		return nil, code, err
	}
	if !vmName.MatchString(q.VM) {
		return nil, http.StatusBadRequest, fmt.Errorf("VM name %q: letters, digits and _.+- only, 1-64, not starting with a sign", q.VM)
	}
	cmd, ok := vmActions[q.Action]
	if !ok {
		return nil, http.StatusBadRequest, fmt.Errorf("action %q: want one of start, shutdown, destroy, reboot, suspend, resume, status", q.Action)
	}
	via, ok := vias[q.Via]
	if !ok {
		return nil, http.StatusBadRequest, fmt.Errorf("channel %q: want auto, vmmi or oob", q.Via)
	}
	if q.Code != "" && !regexp.MustCompile(`^[0-9]{6,8}$`).MatchString(q.Code) {
		return nil, http.StatusBadRequest, errors.New("an app code is 6 to 8 digits")
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Timeout)
	defer cancel()
	ctx = context.WithValue(ctx, codeKey{}, q.Code)
	t0 := time.Now()
	res, err := s.clients[via].Do(ctx, q.Host, cmd, q.VM)
	row := &CommandRow{Time: t0, Who: s.cfg.Inventory.Principal, Host: q.Host, What: q.Action + " " + q.VM, Asked: via,
		LatencyMs: ms(time.Since(t0)), OK: err == nil, Outcome: "ok"}
	if res != nil {
		row.Via, row.RequestID = res.Via, fmt.Sprintf("%016x", res.RequestID)
		if res.Reply != nil && len(res.Reply.VMs) > 0 {
			row.Outcome = "ok: " + res.Reply.VMs[0].State
		}
	}
	if err != nil {
		row.Outcome = err.Error()
		if errors.Is(err, errCodeNeeded) {
			row.NeedsCode = true
			row.Outcome = "protected: the operator's app code is needed"
		}
		var re interface{ ID() uint64 }
		if errors.As(err, &re) && row.RequestID == "" {
			row.RequestID = fmt.Sprintf("%016x", re.ID())
		}
	}
	s.mu.Lock()
	if h, _ := s.host(q.Host); h != nil && (row.NeedsCode || res != nil && res.Challenged) {
		for i := range h.VMs {
			if h.VMs[i].Name == q.VM {
				h.VMs[i].Protected = true
			}
		}
	}
	s.addCommand(row)
	s.mu.Unlock()
	go s.pollHost(context.Background(), q.Host, false)
	return row, http.StatusOK, nil
}

var errCodeNeeded = errors.New("the operator's app code is needed")

// challenge answers a protected VM's challenge with the code the page sent
// along with the command.
func (s *Server) challenge(ctx context.Context, host string, ch *vmsg.Challenge) (string, error) {
	code, _ := ctx.Value(codeKey{}).(string)
	if code == "" {
		return "", errCodeNeeded
	}
	return code, nil
}

type powerReq struct {
	Host   string `json:"host"`
	Action string `json:"action"`
}

func (s *Server) postPower(ctx context.Context, r *http.Request, body []byte) (any, int, error) {
	var q powerReq
	if _, code, err := s.decodeFor(body, &q, &q.Host); err != nil {
		return nil, code, err
	}
	a := client.PowerAction(q.Action)
	if !slices.Contains([]client.PowerAction{client.PowerOn, client.PowerOff, client.PowerCycle, client.PowerReset, client.PowerSoft}, a) {
		return nil, http.StatusBadRequest, fmt.Errorf("power action %q: want on, off, cycle, reset or soft", q.Action)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Timeout)
	defer cancel()
	t0 := time.Now()
	err := s.clients[client.ViaAuto].HostPowerControl(ctx, q.Host, a)
	row := &CommandRow{Time: t0, Who: "bmc user", Host: q.Host, What: "power " + q.Action, Via: "bmc", LatencyMs: ms(time.Since(t0)), OK: err == nil, Outcome: "ok"}
	if err != nil {
		row.Outcome = err.Error()
	}
	s.mu.Lock()
	s.addCommand(row)
	s.mu.Unlock()
	go s.pollHost(context.Background(), q.Host, true)
	return row, http.StatusOK, nil
}

// decodeFor decodes an action's body into q and finds the host it names
// (*host, a field of q): 400 for a bad body, 404 for an unknown host.
func (s *Server) decodeFor(body []byte, q any, host *string) (*HostView, int, error) {
	if err := decode(body, q); err != nil {
		return nil, http.StatusBadRequest, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	h, err := s.host(*host)
	if err != nil {
		return nil, http.StatusNotFound, err
	}
	return h, 0, nil
}

// decode reads a JSON object strictly: unknown fields are an error.
func decode(body []byte, v any) error {
	d := json.NewDecoder(bytesReader(body))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("bad request body: %v", err)
	}
	return nil
}

// addCommand adds a row, newest first. Call with s.mu held.
func (s *Server) addCommand(row *CommandRow) {
	s.st.Commands = append([]*CommandRow{row}, s.st.Commands...)
	if len(s.st.Commands) > maxCommands {
		s.st.Commands = s.st.Commands[:maxCommands]
	}
	s.changed()
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
