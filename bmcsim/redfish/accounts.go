package redfish

import (
	"net/http"
	"slices"
)

func (s *Service) getAccountService(w http.ResponseWriter, r *http.Request, _ *caller) {
	writeResource(w, r, http.StatusOK, map[string]any{
		"@odata.id":                       v1 + "/AccountService",
		"@odata.type":                     "#AccountService.v1_15_0.AccountService",
		"Id":                              "AccountService",
		"Name":                            "Account Service",
		"Description":                     "The BMC's IPMI users; roles from their IPMI privilege",
		"ServiceEnabled":                  true,
		"AuthFailureLoggingThreshold":     1,
		"AccountLockoutThreshold":         s.opts.LockoutAttempts,
		"AccountLockoutDuration":          int(s.opts.LockoutDuration.Seconds()),
		"AccountLockoutCounterResetAfter": int(s.opts.LockoutDuration.Seconds()),
		"MinPasswordLength":               1,
		"MaxPasswordLength":               20,
		"Accounts":                        odataID(accountsURI),
		"Roles":                           odataID(rolesURI),
		"Status":                          map[string]any{"State": "Enabled", "Health": "OK"},
	})
}

func (s *Service) getAccounts(w http.ResponseWriter, r *http.Request, _ *caller) {
	var ids []string
	for _, a := range s.backend.Accounts() {
		ids = append(ids, accountsURI+"/"+a.ID)
	}
	writeResource(w, r, http.StatusOK, collection(accountsURI, "ManagerAccountCollection", "Accounts Collection", ids))
}

func (s *Service) account(id string) (Account, bool) {
	for _, a := range s.backend.Accounts() {
		if a.ID == id {
			return a, true
		}
	}
	return Account{}, false
}

func accountBody(a Account) map[string]any {
	return map[string]any{
		"@odata.id":    accountsURI + "/" + a.ID,
		"@odata.type":  "#ManagerAccount.v1_12_0.ManagerAccount",
		"Id":           a.ID,
		"Name":         "User Account",
		"UserName":     a.UserName,
		"RoleId":       string(a.Role),
		"Enabled":      a.Enabled,
		"Locked":       false,
		"Password":     nil,
		"AccountTypes": []string{"Redfish", "IPMI"},
		"Links":        map[string]any{"Role": odataID(rolesURI + "/" + string(a.Role))},
	}
}

func (s *Service) getAccount(w http.ResponseWriter, r *http.Request, _ *caller) {
	a, ok := s.account(r.PathValue("id"))
	if !ok {
		writeError(w, errNotFound(r.URL.Path))
		return
	}
	writeResource(w, r, http.StatusOK, accountBody(a))
}

// accountPatch is the body of PATCH Accounts/{id}: the password only
// (names and privileges are the BMC's configuration).
type accountPatch struct {
	Password *string
}

func (s *Service) patchAccount(w http.ResponseWriter, r *http.Request, c *caller) {
	a, ok := s.account(r.PathValue("id"))
	if !ok {
		writeError(w, errNotFound(r.URL.Path))
		return
	}
	body, aerr := readBody(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	if aerr := ifMatch(r, etag(accountBody(a))); aerr != nil {
		writeError(w, aerr)
		return
	}
	var p accountPatch
	if aerr := decodeJSON(body, &p); aerr != nil {
		writeError(w, aerr)
		return
	}
	if p.Password != nil {
		if n := len(*p.Password); n < 1 || n > 20 {
			writeError(w, &apiError{status: http.StatusBadRequest, key: "PropertyValueFormatError", prop: "Password",
				args:    []string{"(hidden)", "Password"},
				message: "The value for the property Password is of a different format than the property can accept: 1 to 20 bytes (the IPMI v2.0 limit)."})
			return
		}
		if err := s.backend.SetPassword(a.ID, *p.Password); err != nil {
			writeError(w, errInternal(err))
			return
		}
		s.sessions.removeUser(a.UserName)
		s.log.Info("redfish password changed", "user", a.UserName, "by", c.user)
	}
	writeResource(w, r, http.StatusOK, accountBody(a))
}

var roles = []Role{RoleAdministrator, RoleOperator, RoleReadOnly}

var rolePrivileges = map[Role][]string{
	RoleAdministrator: {"Login", "ConfigureManager", "ConfigureUsers", "ConfigureSelf", "ConfigureComponents"},
	RoleOperator:      {"Login", "ConfigureSelf", "ConfigureComponents"},
	RoleReadOnly:      {"Login", "ConfigureSelf"},
}

func (s *Service) getRoles(w http.ResponseWriter, r *http.Request, _ *caller) {
	ids := make([]string, len(roles))
	for i, ro := range roles {
		ids[i] = rolesURI + "/" + string(ro)
	}
	writeResource(w, r, http.StatusOK, collection(rolesURI, "RoleCollection", "Roles Collection", ids))
}

func (s *Service) getRole(w http.ResponseWriter, r *http.Request, _ *caller) {
	ro := Role(r.PathValue("id"))
	if !slices.Contains(roles, ro) {
		writeError(w, errNotFound(r.URL.Path))
		return
	}
	ipmi := map[Role]string{RoleAdministrator: "ADMINISTRATOR", RoleOperator: "OPERATOR", RoleReadOnly: "USER"}[ro]
	writeResource(w, r, http.StatusOK, map[string]any{
		"@odata.id":          rolesURI + "/" + string(ro),
		"@odata.type":        "#Role.v1_3_2.Role",
		"Id":                 string(ro),
		"Name":               string(ro) + " role",
		"Description":        "IPMI privilege " + ipmi,
		"RoleId":             string(ro),
		"IsPredefined":       true,
		"AssignedPrivileges": rolePrivileges[ro],
	})
}
