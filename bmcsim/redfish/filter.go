package redfish

import (
	"net/http"
	"strings"
)

// eventFilter is an SSE stream's $filter (DSP0266 §13.6.3): terms
// "Property eq 'value'" joined by " or "; an event passes when one term
// matches. The properties: MessageId, RegistryPrefix, OriginResource.
type eventFilter struct {
	terms []filterTerm
}

type filterTerm struct{ prop, value string }

var filterProps = []string{"MessageId", "RegistryPrefix", "OriginResource"}

// maxFilter bounds a $filter's length.
const maxFilter = 1024

// parseFilter reads a $filter; "" is no filter (nil).
func parseFilter(s string) (*eventFilter, *apiError) {
	if s == "" {
		return nil, nil
	}
	bad := func() *apiError {
		return newError(http.StatusBadRequest, "QueryParameterValueFormatError",
			"The value '"+trunc(s)+"' for the parameter $filter is of a different format than the parameter can accept: want Property eq 'value' [or …] with Property MessageId, RegistryPrefix or OriginResource.",
			trunc(s), "$filter")
	}
	if len(s) > maxFilter {
		return nil, bad()
	}
	f := &eventFilter{}
	for _, term := range strings.Split(s, " or ") {
		prop, val, ok := strings.Cut(strings.TrimSpace(term), " eq ")
		prop, val = strings.TrimSpace(prop), strings.TrimSpace(val)
		if !ok || len(val) < 2 || val[0] != '\'' || val[len(val)-1] != '\'' || strings.Contains(val[1:len(val)-1], "'") {
			return nil, bad()
		}
		known := false
		for _, p := range filterProps {
			known = known || p == prop
		}
		if !known {
			return nil, bad()
		}
		f.terms = append(f.terms, filterTerm{prop, val[1 : len(val)-1]})
	}
	return f, nil
}

// match reports whether rec passes f (a nil filter passes everything).
func (f *eventFilter) match(rec eventRecord) bool {
	if f == nil {
		return true
	}
	for _, t := range f.terms {
		var v string
		switch t.prop {
		case "MessageId":
			v = rec.messageID
		case "RegistryPrefix":
			v, _, _ = strings.Cut(rec.messageID, ".")
		case "OriginResource":
			v = rec.origin
		}
		if v == t.value {
			return true
		}
	}
	return false
}

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
