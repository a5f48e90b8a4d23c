package redfish

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
)

// MaxBody bounds a request body: every body Redfish accepts here is a few
// hundred bytes.
const MaxBody = 16 << 10

// readBody reads r's body up to MaxBody.
func readBody(r *http.Request) ([]byte, *apiError) {
	b, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
	if err != nil {
		return nil, newError(http.StatusBadRequest, "MalformedJSON",
			"The request body submitted was malformed JSON and could not be parsed by the receiving service.")
	}
	if len(b) > MaxBody {
		return nil, newError(http.StatusRequestEntityTooLarge, "RequestBodyTooLarge",
			"The request body is larger than the "+itoa(MaxBody)+" bytes this service accepts.")
	}
	return b, nil
}

// decodeJSON decodes one JSON object from data into v (a pointer to a
// struct of pointer fields) strictly: malformed JSON, trailing data, a
// property v does not have, or a value of the wrong type are each a
// Redfish error naming the property.
func decodeJSON(data []byte, v any) *apiError {
	malformed := newError(http.StatusBadRequest, "MalformedJSON",
		"The request body submitted was malformed JSON and could not be parsed by the receiving service.")
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return malformed
	}
	if err := checkCase(data, v); err != nil {
		return err
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	err := d.Decode(v)
	var te *json.UnmarshalTypeError
	switch {
	case err == nil:
	case errors.As(err, &te):
		p := te.Field
		return &apiError{status: http.StatusBadRequest, key: "PropertyValueTypeError", prop: strings.ReplaceAll(p, ".", "/"),
			message: "The value for the property " + p + " is of a different type than the property can accept.",
			args:    []string{te.Value, p}}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		p := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return unknownProperty(p)
	default:
		return malformed
	}
	if _, err := d.Token(); err != io.EOF {
		return malformed // something after the object
	}
	return nil
}

func unknownProperty(p string) *apiError {
	return &apiError{status: http.StatusBadRequest, key: "PropertyUnknown", prop: p, args: []string{p},
		message: "The property " + p + " is not in the list of valid properties for the resource."}
}

// checkCase refuses property names that match a field of v only when case
// is ignored (encoding/json matches names case-insensitively; Redfish
// names are case-sensitive). It looks at the top level and at nested
// objects of struct-typed fields.
func checkCase(data []byte, v any) *apiError {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil // the strict decode reports it
	}
	return checkNames(top, fieldNames(v))
}

func checkNames(obj map[string]json.RawMessage, names map[string]map[string]bool) *apiError {
	for k, raw := range obj {
		sub, ok := names[k]
		if !ok {
			return unknownProperty(k)
		}
		if sub != nil {
			var inner map[string]json.RawMessage
			if json.Unmarshal(raw, &inner) == nil {
				for ik := range inner {
					if !sub[ik] {
						return unknownProperty(k + "/" + ik)
					}
				}
			}
		}
	}
	return nil
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// fieldNames maps the JSON names of v's fields (v a pointer to a struct)
// to the names of their own fields when they are structs, else to nil.
func fieldNames(v any) map[string]map[string]bool {
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	out := map[string]map[string]bool{}
	for i := range t.NumField() {
		f := t.Field(i)
		name := jsonName(f)
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() != reflect.Struct {
			out[name] = nil
			continue
		}
		sub := map[string]bool{}
		for j := range ft.NumField() {
			sub[jsonName(ft.Field(j))] = true
		}
		out[name] = sub
	}
	return out
}

func jsonName(f reflect.StructField) string {
	if tag, _, _ := strings.Cut(f.Tag.Get("json"), ","); tag != "" {
		return tag
	}
	return f.Name
}
