package redfish

import (
	"net/http"
	"time"
)

const (
	v1          = "/redfish/v1"
	systemURI   = v1 + "/Systems/1"
	chassisURI  = v1 + "/Chassis/1"
	managerURI  = v1 + "/Managers/1"
	sessionsURI = v1 + "/SessionService/Sessions"
	accountsURI = v1 + "/AccountService/Accounts"
	rolesURI    = v1 + "/AccountService/Roles"
	selURI      = managerURI + "/LogServices/SEL"
	sseURI      = v1 + "/EventService/SSE"
	subsURI     = v1 + "/EventService/Subscriptions"
)

func (s *Service) routes() {
	get := func(p priv, h func(w http.ResponseWriter, r *http.Request, c *caller)) map[string]method {
		return map[string]method{"GET": {p, h}}
	}
	s.route("/redfish", get(public, func(w http.ResponseWriter, r *http.Request, _ *caller) {
		writeJSON(w, r, http.StatusOK, map[string]any{"v1": v1 + "/"})
	}))
	s.route(v1, get(public, s.getRoot))
	s.route(v1+"/odata", get(public, s.getOData))
	s.route(metadataURI, get(public, s.getMetadata))
	s.route(oemSchemaURI, get(public, s.getOEMSchema))
	s.route(v1+"/SessionService", map[string]method{"GET": {readOnly, s.getSessionService}})
	s.route(sessionsURI, map[string]method{"GET": {readOnly, s.getSessions}, "POST": {public, s.postSession}})
	s.route(sessionsURI+"/{id}", map[string]method{"GET": {readOnly, s.getSession}, "DELETE": {readOnly, s.deleteSession}})
	s.route(v1+"/AccountService", get(readOnly, s.getAccountService))
	s.route(accountsURI, get(readOnly, s.getAccounts))
	s.route(accountsURI+"/{id}", map[string]method{"GET": {readOnly, s.getAccount}, "PATCH": {admin, s.patchAccount}})
	s.route(rolesURI, get(readOnly, s.getRoles))
	s.route(rolesURI+"/{id}", get(readOnly, s.getRole))
	s.route(v1+"/Systems", get(readOnly, func(w http.ResponseWriter, r *http.Request, _ *caller) {
		writeResource(w, r, http.StatusOK, collection(v1+"/Systems", "ComputerSystemCollection", "Computer System Collection", []string{systemURI}))
	}))
	s.route(systemURI, map[string]method{"GET": {readOnly, s.getSystem}, "PATCH": {operator, s.patchSystem}})
	s.route(systemURI+"/Actions/ComputerSystem.Reset", map[string]method{"POST": {operator, s.postReset}})
	s.route(systemURI+"/ResetActionInfo", get(readOnly, s.getResetActionInfo))
	s.route(v1+"/Chassis", get(readOnly, func(w http.ResponseWriter, r *http.Request, _ *caller) {
		writeResource(w, r, http.StatusOK, collection(v1+"/Chassis", "ChassisCollection", "Chassis Collection", []string{chassisURI}))
	}))
	s.route(chassisURI, get(readOnly, s.getChassis))
	s.route(sensorsURI, get(readOnly, s.getSensors))
	s.route(sensorsURI+"/{id}", get(readOnly, s.getSensor))
	s.route(chassisURI+"/Thermal", get(readOnly, s.getThermal))
	s.route(chassisURI+"/Power", get(readOnly, s.getPower))
	s.route(v1+"/Managers", get(readOnly, func(w http.ResponseWriter, r *http.Request, _ *caller) {
		writeResource(w, r, http.StatusOK, collection(v1+"/Managers", "ManagerCollection", "Manager Collection", []string{managerURI}))
	}))
	s.route(managerURI, get(readOnly, s.getManager))
	s.route(managerURI+"/NetworkProtocol", get(readOnly, s.getNetworkProtocol))
	s.route(queueActionURI, map[string]method{"POST": {operator, s.postQueueCommand}})
	s.route(managerURI+"/LogServices", get(readOnly, func(w http.ResponseWriter, r *http.Request, _ *caller) {
		writeResource(w, r, http.StatusOK, collection(managerURI+"/LogServices", "LogServiceCollection", "Log Service Collection", []string{selURI}))
	}))
	s.route(selURI, get(readOnly, s.getLogService))
	s.route(selURI+"/Entries", get(readOnly, s.getLogEntries))
	s.route(selURI+"/Entries/{id}", get(readOnly, s.getLogEntry))
	s.route(selURI+"/Actions/LogService.ClearLog", map[string]method{"POST": {operator, s.postClearLog}})
	s.route(v1+"/EventService", map[string]method{"GET": {readOnly, s.getEventService}, "PATCH": {admin, s.patchEventService}})
	s.route(sseURI, get(readOnly, s.getSSE))
	s.route(v1+"/EventService/Actions/EventService.SubmitTestEvent", map[string]method{"POST": {operator, s.postTestEvent}})
	s.route(subsURI, map[string]method{"GET": {readOnly, s.getSubscriptions}, "POST": {operator, s.postSubscription}})
	s.route(subsURI+"/{id}", map[string]method{"GET": {readOnly, s.getSubscription}, "DELETE": {operator, s.deleteSubscription}})
	// Anything else under /redfish is not found, as a Redfish error.
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { writeError(w, errNotFound(r.URL.Path)) })
}

// rootLinks are the ServiceRoot's top-level resources; the OData service
// document lists them too.
var rootLinks = []struct{ name, uri string }{
	{"Systems", v1 + "/Systems"},
	{"Chassis", v1 + "/Chassis"},
	{"Managers", v1 + "/Managers"},
	{"AccountService", v1 + "/AccountService"},
	{"SessionService", v1 + "/SessionService"},
	{"EventService", v1 + "/EventService"},
}

func (s *Service) getRoot(w http.ResponseWriter, r *http.Request, _ *caller) {
	info := s.backend.Info(r.Context())
	root := map[string]any{
		"@odata.id":      v1,
		"@odata.type":    "#ServiceRoot.v1_17_0.ServiceRoot",
		"Id":             "RootService",
		"Name":           "Root Service",
		"RedfishVersion": "1.20.0",
		"UUID":           info.UUID,
		"Vendor":         "ooblab",
		"Product":        "bmcsim",
		"Links":          map[string]any{"Sessions": odataID(sessionsURI)},
		"ProtocolFeaturesSupported": map[string]any{
			"ExpandQuery": map[string]any{"ExpandAll": false, "Levels": false, "Links": false, "NoLinks": false},
			"FilterQuery": false, "SelectQuery": false, "OnlyMemberQuery": false,
		},
	}
	for _, l := range rootLinks {
		root[l.name] = odataID(l.uri)
	}
	writeResource(w, r, http.StatusOK, root)
}

func (s *Service) getSessionService(w http.ResponseWriter, r *http.Request, _ *caller) {
	writeResource(w, r, http.StatusOK, map[string]any{
		"@odata.id":      v1 + "/SessionService",
		"@odata.type":    "#SessionService.v1_1_9.SessionService",
		"Id":             "SessionService",
		"Name":           "Session Service",
		"ServiceEnabled": true,
		"SessionTimeout": int(s.opts.SessionTimeout / time.Second),
		"Sessions":       odataID(sessionsURI),
		"Status":         map[string]any{"State": "Enabled", "Health": "OK"},
	})
}

func (s *Service) getSessions(w http.ResponseWriter, r *http.Request, c *caller) {
	var ids []string
	for _, se := range s.sessions.list() {
		if c.role == RoleAdministrator || se.user == c.user {
			ids = append(ids, sessionsURI+"/"+se.id)
		}
	}
	writeResource(w, r, http.StatusOK, collection(sessionsURI, "SessionCollection", "Session Collection", ids))
}

func sessionBody(se *session) map[string]any {
	return map[string]any{
		"@odata.id":   sessionsURI + "/" + se.id,
		"@odata.type": "#Session.v1_7_0.Session",
		"Id":          se.id,
		"Name":        "User Session",
		"UserName":    se.user,
		"CreatedTime": se.created.UTC().Format(time.RFC3339),
	}
}

// sessionRequest is the body of POST Sessions.
type sessionRequest struct {
	UserName *string
	Password *string
}

func (s *Service) postSession(w http.ResponseWriter, r *http.Request, _ *caller) {
	body, aerr := readBody(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	var req sessionRequest
	if aerr := decodeJSON(body, &req); aerr != nil {
		writeError(w, aerr)
		return
	}
	if req.UserName == nil || req.Password == nil {
		p := "UserName"
		if req.UserName != nil {
			p = "Password"
		}
		writeError(w, &apiError{status: http.StatusBadRequest, key: "PropertyMissing", prop: p, args: []string{p},
			message: "The property " + p + " is a required property and must be included in the request."})
		return
	}
	a, aerr := s.login(r, *req.UserName, *req.Password)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	se := s.sessions.create(a.UserName, a.Role)
	if se == nil {
		writeError(w, newError(http.StatusServiceUnavailable, "SessionLimitExceeded",
			"The session establishment failed due to the number of simultaneous sessions exceeding the limit of the implementation."))
		return
	}
	s.log.Info("redfish session opened", "user", a.UserName, "role", a.Role, "session", se.id, "source", sourceIP(r))
	w.Header().Set("X-Auth-Token", se.token)
	w.Header().Set("Location", sessionsURI+"/"+se.id)
	writeResource(w, r, http.StatusCreated, sessionBody(se))
}

func (s *Service) getSession(w http.ResponseWriter, r *http.Request, c *caller) {
	se := s.sessions.get(r.PathValue("id"))
	if se == nil || (c.role != RoleAdministrator && se.user != c.user) {
		writeError(w, errNotFound(r.URL.Path))
		return
	}
	writeResource(w, r, http.StatusOK, sessionBody(se))
}

func (s *Service) deleteSession(w http.ResponseWriter, r *http.Request, c *caller) {
	se := s.sessions.get(r.PathValue("id"))
	if se == nil || (c.role != RoleAdministrator && se.user != c.user) {
		writeError(w, errNotFound(r.URL.Path))
		return
	}
	s.sessions.remove(se.id)
	s.log.Info("redfish session closed", "user", se.user, "session", se.id)
	w.WriteHeader(http.StatusNoContent)
}
