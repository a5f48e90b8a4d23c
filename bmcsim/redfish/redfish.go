// Package redfish serves DMTF Redfish (DSP0266) for one simulated BMC,
// over the same model as its IPMI side: the BMC's users and privileges,
// its power driver, boot flags and SEL reach it through Backend. The tree:
//
//	/redfish/v1                                   ServiceRoot
//	/redfish/v1/odata, /redfish/v1/$metadata      OData service document, CSDL
//	/redfish/v1/Schemas/Ooblab_v1.xml             the OEM CSDL
//	/redfish/v1/SessionService[/Sessions[/{id}]]  login (X-Auth-Token), logout
//	/redfish/v1/AccountService[/Accounts|Roles]   the IPMI users, roles from privileges
//	/redfish/v1/Systems/1                         power, boot override, Reset
//	/redfish/v1/Chassis/1                         power state
//	/redfish/v1/Managers/1[/NetworkProtocol]      the BMC
//	/redfish/v1/Managers/1/LogServices/SEL        the SEL, Entries, ClearLog
//	/redfish/v1/EventService[/SSE]                Server-Sent Events
//
// HTTPS only (Serve), sessions or HTTP Basic on every resource but the
// service root and the schema documents, privileges per route (ReadOnly
// reads, Operator resets and sets the boot override, Administrator manages
// accounts), strict request bodies (docs/bmcsim.md, "Redfish").
package redfish

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Options shape a Service; zero values take the defaults.
type Options struct {
	Logger *slog.Logger
	// SessionTimeout ends a session idle this long (default 30 min).
	SessionTimeout time.Duration
	// MaxSessions bounds the open sessions (default 64).
	MaxSessions int
	// LockoutAttempts failed logins lock a user from one source address
	// for LockoutDuration (defaults 5 and 60 s, as the LAN channel).
	LockoutAttempts int
	LockoutDuration time.Duration
	// HTTPSPort is reported in Managers/1/NetworkProtocol.
	HTTPSPort int
	// Now is the clock (tests).
	Now func() time.Time
}

// Service is the Redfish service of one BMC.
type Service struct {
	backend  Backend
	opts     Options
	log      *slog.Logger
	sessions *sessions
	logins   *logins
	events   *broker
	subs     *subscriptions
	power    powerWatch
	powerOp  sync.Mutex               // held across a Reset and its event, and a watcher read
	loginMu  [loginStripes]sync.Mutex // one password check at a time per (user, source) stripe
	done     chan struct{}            // closed when Serve ends
	mux      *http.ServeMux
}

// New builds the service of b.
func New(b Backend, o Options) *Service {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.SessionTimeout <= 0 {
		o.SessionTimeout = 30 * time.Minute
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = 64
	}
	if o.LockoutAttempts <= 0 {
		o.LockoutAttempts = 5
	}
	if o.LockoutDuration <= 0 {
		o.LockoutDuration = time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Service{backend: b, opts: o, log: o.Logger,
		sessions: newSessions(o.MaxSessions, o.SessionTimeout, o.Now),
		logins:   newLogins(o.LockoutAttempts, o.LockoutDuration, o.Now),
		events:   newBroker(o.Now),
		subs:     newSubscriptions(),
		done:     make(chan struct{}),
		mux:      http.NewServeMux(),
	}
	s.events.sink = s.subs.deliver
	s.routes()
	return s
}

// Handler is the service's HTTP handler (serve it over TLS only).
func (s *Service) Handler() http.Handler { return s }

func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// One spelling per resource: no trailing slash but on the root.
	if p := r.URL.Path; len(p) > 1 && strings.HasSuffix(p, "/") && p != "/redfish/v1/" {
		r.URL.Path = strings.TrimSuffix(p, "/")
	}
	if r.URL.Path == "/redfish/v1/" {
		r.URL.Path = "/redfish/v1"
	}
	w.Header().Set("OData-Version", "4.0")
	w.Header().Set("Cache-Control", "no-store")
	s.mux.ServeHTTP(w, r)
}

// priv is a route's least role; public routes need no login.
type priv int

const (
	public priv = iota
	readOnly
	operator
	admin
)

func (p priv) role() Role {
	switch p {
	case admin:
		return RoleAdministrator
	case operator:
		return RoleOperator
	}
	return RoleReadOnly
}

// method is one method of a route.
type method struct {
	priv priv
	h    func(w http.ResponseWriter, r *http.Request, c *caller)
}

// route binds pattern's methods; a method it lacks gets 405 with Allow.
func (s *Service) route(pattern string, ms map[string]method) {
	allow := make([]string, 0, len(ms)+1)
	for _, m := range []string{"GET", "HEAD", "POST", "PATCH", "PUT", "DELETE"} {
		if _, ok := ms[m]; ok || (m == "HEAD" && ms["GET"].h != nil) {
			allow = append(allow, m)
		}
	}
	allowH := strings.Join(allow, ", ")
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allowH)
		verb := r.Method
		if verb == http.MethodHead {
			verb = http.MethodGet
		}
		m, ok := ms[verb]
		if !ok {
			writeError(w, newError(http.StatusMethodNotAllowed, "OperationNotAllowed",
				"The HTTP method "+r.Method+" is not allowed on "+r.URL.Path+"."))
			return
		}
		c := &caller{}
		if m.priv != public {
			var err *apiError
			if c, err = s.authenticate(r); err != nil {
				writeError(w, err)
				return
			}
			if c.role.rank() < m.priv.role().rank() {
				writeError(w, errPrivilege())
				return
			}
		}
		m.h(w, r, c)
	})
}

// etag is the weak entity tag of a resource body.
func etag(obj map[string]any) string {
	delete(obj, "@odata.etag")
	b, _ := json.Marshal(obj)
	sum := sha256.Sum256(b)
	return `W/"` + hex.EncodeToString(sum[:8]) + `"`
}

// writeResource sends obj with its ETag (header and @odata.etag).
func writeResource(w http.ResponseWriter, r *http.Request, status int, obj map[string]any) {
	tag := etag(obj)
	obj["@odata.etag"] = tag
	w.Header().Set("ETag", tag)
	writeJSON(w, r, status, obj)
}

func writeJSON(w http.ResponseWriter, r *http.Request, status int, obj any) {
	b, err := json.Marshal(obj)
	if err != nil {
		writeError(w, errInternal(err))
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(b)
	}
}

// ifMatch checks a PATCH's If-Match against the resource's current tag.
func ifMatch(r *http.Request, current string) *apiError {
	want := r.Header.Get("If-Match")
	if want == "" || want == "*" {
		return nil
	}
	for _, t := range strings.Split(want, ",") {
		t = strings.TrimSpace(t)
		if t == current || "W/"+t == current || strings.TrimPrefix(t, "W/") == strings.TrimPrefix(current, "W/") {
			return nil
		}
	}
	return newError(http.StatusPreconditionFailed, "PreconditionFailed",
		"The ETag supplied did not match the ETag required to change this resource.")
}

func odataID(p string) map[string]any { return map[string]any{"@odata.id": p} }

// collection renders a resource collection of members.
func collection(id, typ, name string, members []string) map[string]any {
	ms := make([]any, len(members))
	for i, m := range members {
		ms[i] = odataID(m)
	}
	return map[string]any{
		"@odata.id":           id,
		"@odata.type":         "#" + typ + "." + typ,
		"Name":                name,
		"Members":             ms,
		"Members@odata.count": len(ms),
	}
}
