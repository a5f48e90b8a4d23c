package redfish

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// registry is the Base message registry version bmcsim's messages name.
const registry = "Base.1.19."

// apiError is a Redfish error: the HTTP status and one Base message.
type apiError struct {
	status  int
	key     string // message key in the Base registry, e.g. PropertyUnknown
	message string
	args    []string
	prop    string        // the property it is about (RelatedProperties), or ""
	retry   time.Duration // Retry-After, when set
}

func (e *apiError) Error() string { return e.message }

func newError(status int, key, message string, args ...string) *apiError {
	return &apiError{status: status, key: key, message: message, args: args}
}

var resolutions = map[string]string{
	"MalformedJSON":                  "Ensure that the request body is valid JSON and resubmit the request.",
	"PropertyUnknown":                "Remove the unknown property from the request body and resubmit the request if the operation failed.",
	"PropertyValueTypeError":         "Correct the value for the property in the request body and resubmit the request if the operation failed.",
	"PropertyValueNotInList":         "Choose a value from the enumeration list that the implementation can support and resubmit the request if the operation failed.",
	"ActionParameterMissing":         "Supply the action with the required parameter in the request body when the request is resubmitted.",
	"ActionParameterValueNotInList":  "Choose a value from the enumeration list that the implementation can support and resubmit the request if the operation failed.",
	"PreconditionFailed":             "Try the operation again using the appropriate ETag.",
	"NoValidSession":                 "Establish a session before attempting any operations.",
	"InsufficientPrivilege":          "Either abandon the operation or change the associated access rights and resubmit the request if the operation failed.",
	"ResourceNotFound":               "Provide a valid resource identifier and resubmit the request.",
	"OperationNotAllowed":            "None.",
	"SessionLimitExceeded":           "Reduce the number of other sessions before trying to establish the session or increase the limit of simultaneous sessions, if supported.",
	"RequestBodyTooLarge":            "Reduce the size of the request body and resubmit the request.",
	"InternalError":                  "Resubmit the request.  If the problem persists, consider resetting the service.",
	"ActionNotSupported":             "The action supplied cannot be resubmitted to the implementation.  Perhaps the action was invalid, the wrong resource was the target or the implementation documentation may be of assistance.",
	"Success":                        "None.",
	"QueryParameterValueFormatError": "Correct the value for the query parameter in the request and resubmit the request if the operation failed.",
	"ServiceTemporarilyUnavailable":  "Wait for the indicated retry duration and retry the operation.",
	"PropertyMissing":                "Ensure that the property is in the request body and has a valid value and resubmit the request if the operation failed.",
	"PropertyValueFormatError":       "Correct the value for the property in the request body and resubmit the request if the operation failed.",
	"ActionParameterNotSupported":    "Remove the parameter supplied and resubmit the request if the operation failed.",
}

func severity(key string) string {
	switch key {
	case "Success":
		return "OK"
	case "InternalError", "PreconditionFailed", "NoValidSession", "InsufficientPrivilege", "SessionLimitExceeded":
		return "Critical"
	}
	return "Warning"
}

// message is one @Message.ExtendedInfo entry.
func message(key, text string, args []string, prop string) map[string]any {
	if args == nil {
		args = []string{}
	}
	m := map[string]any{
		"@odata.type":     "#Message.v1_2_0.Message",
		"MessageId":       registry + key,
		"Message":         text,
		"MessageArgs":     args,
		"Severity":        severity(key),
		"MessageSeverity": severity(key),
		"Resolution":      resolutions[key],
	}
	if prop != "" {
		m["RelatedProperties"] = []string{"#/" + prop}
	}
	return m
}

// writeError sends e as a Redfish error body (DSP0266 §9.6).
func writeError(w http.ResponseWriter, e *apiError) {
	body := map[string]any{"error": map[string]any{
		"code":                  registry + e.key,
		"message":               e.message,
		"@Message.ExtendedInfo": []any{message(e.key, e.message, e.args, e.prop)},
	}}
	b, _ := json.Marshal(body)
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("OData-Version", "4.0")
	if e.status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Basic realm="bmcsim"`)
	}
	if e.retry > 0 {
		h.Set("Retry-After", strconv.Itoa(int((e.retry+time.Second-1)/time.Second)))
	}
	w.WriteHeader(e.status)
	_, _ = w.Write(b)
}

func errNotFound(uri string) *apiError {
	return newError(http.StatusNotFound, "ResourceNotFound",
		"The requested resource of type Resource named '"+uri+"' was not found.", "Resource", uri)
}

func errNoSession() *apiError {
	return newError(http.StatusUnauthorized, "NoValidSession",
		"There is no valid session established with the implementation.")
}

func errPrivilege() *apiError {
	return newError(http.StatusForbidden, "InsufficientPrivilege",
		"There are insufficient privileges for the account or credentials associated with the current session to perform the requested operation.")
}

func errInternal(err error) *apiError {
	return newError(http.StatusInternalServerError, "InternalError",
		"The request failed due to an internal service error: "+err.Error()+".")
}
