package redfish_test

import (
	"encoding/json"
	"encoding/xml"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ooblab/ooblab/bmcsim/bmcsimtest"
	"github.com/ooblab/ooblab/internal/oem"
	"github.com/ooblab/ooblab/internal/record"
)

// csdl is the part of a CSDL document (OData 4.0 CSDL XML) the tests read.
type csdl struct {
	References []struct {
		URI      string `xml:"Uri,attr"`
		Includes []struct {
			Namespace string `xml:"Namespace,attr"`
		} `xml:"Include"`
	} `xml:"Reference"`
	Schemas []struct {
		Namespace    string `xml:"Namespace,attr"`
		ComplexTypes []struct {
			Name string `xml:"Name,attr"`
		} `xml:"ComplexType"`
		Actions []struct {
			Name string `xml:"Name,attr"`
		} `xml:"Action"`
		Containers []struct {
			Name    string `xml:"Name,attr"`
			Extends string `xml:"Extends,attr"`
		} `xml:"EntityContainer"`
	} `xml:"DataServices>Schema"`
}

// getCSDL reads a CSDL document without a login.
func getCSDL(t *testing.T, b *bmcsimtest.BMC, path string) csdl {
	t.Helper()
	status, h, data := do(t, b.RedfishClient(), b, "GET", path, "", "", "")
	if status != 200 || h.Get("Content-Type") != "application/xml" {
		t.Fatalf("GET %s without login: %d %s\n%s", path, status, h.Get("Content-Type"), data)
	}
	var doc csdl
	if err := xml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("%s: %v\n%s", path, err, data)
	}
	return doc
}

// odataTypes adds every @odata.type in v (a decoded JSON body) to types
// and every link (@odata.id, @Redfish.ActionInfo) to ids.
func odataTypes(v any, types, ids map[string]bool) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && k == "@odata.type" {
				types[s] = true
			}
			if s, ok := x.(string); ok && (k == "@odata.id" || k == "@Redfish.ActionInfo") {
				ids[s] = true
			}
			odataTypes(x, types, ids)
		}
	case []any:
		for _, x := range v {
			odataTypes(x, types, ids)
		}
	}
}

// TestMetadataNamesEveryType walks the whole tree as an administrator —
// with a session, a subscription and an hvagent alert in it — and adds an
// error body, an event and the OEM queue action's answer: every
// @odata.type seen must have its namespace, and the unversioned one,
// included in $metadata from the schema file of its type, DMTF's or the
// Ooblab OEM document, which must define it.
func TestMetadataNamesEveryType(t *testing.T) {
	b, _ := start(t)
	hc := b.RedfishClient()
	md := getCSDL(t, b, "/redfish/v1/$metadata")
	uriOf := map[string]string{}
	for _, r := range md.References {
		for _, in := range r.Includes {
			uriOf[in.Namespace] = r.URI
		}
	}
	if len(md.Schemas) != 1 || md.Schemas[0].Namespace != "Service" || len(md.Schemas[0].Containers) != 1 ||
		md.Schemas[0].Containers[0].Extends != "ServiceRoot.v1_0_0.ServiceContainer" || uriOf["ServiceRoot.v1_0_0"] == "" {
		t.Errorf("$metadata lacks the Service container extending ServiceRoot.v1_0_0.ServiceContainer: %+v", md.Schemas)
	}
	oemURI := uriOf["OoblabLogEntry.v1_0_0"]
	if !strings.HasPrefix(oemURI, "/redfish/v1/") {
		t.Fatalf("the Ooblab OEM schema is referenced at %q, not a local URI", oemURI)
	}
	oemDefined := map[string]bool{}
	for _, s := range getCSDL(t, b, oemURI).Schemas {
		for _, ct := range s.ComplexTypes {
			oemDefined[s.Namespace+"."+ct.Name] = true
		}
		for _, a := range s.Actions {
			oemDefined[s.Namespace+"."+a.Name] = true
		}
	}

	// Fill the tree.
	events := make(chan []byte, 4)
	dest := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		events <- body
		w.WriteHeader(http.StatusNoContent)
	}))
	defer dest.Close()
	for _, req := range []struct{ path, body string }{
		{"/redfish/v1/SessionService/Sessions", `{"UserName":"vms","Password":"vms-pw-2"}`},
		{"/redfish/v1/EventService/Subscriptions", `{"Destination":"` + dest.URL + `"}`},
	} {
		if status, _, data := do(t, hc, b, "POST", req.path, "vms", "vms-pw-2", req.body); status != 201 {
			t.Fatalf("POST %s: %d %s", req.path, status, data)
		}
	}
	b.BMC.SEL.Add(oem.SELAlert{Class: oem.AlertCrash, RequestID: 7}.Record(oem.IANA(b.BMC.Config.IANA), 0))

	types, ids := map[string]bool{}, map[string]bool{}
	add := func(what string, data []byte) {
		t.Helper()
		var v any
		if err := json.Unmarshal(data, &v); err != nil {
			t.Fatalf("%s: %v: %s", what, err, data)
		}
		odataTypes(v, types, ids)
	}
	visited := map[string]bool{}
	for queue := []string{"/redfish/v1"}; len(queue) > 0; queue = queue[1:] {
		p := queue[0]
		if visited[p] {
			continue
		}
		visited[p] = true
		status, _, data := do(t, hc, b, "GET", p, "admin", "admin-pw-1", "")
		if status != 200 {
			t.Errorf("GET %s: %d %s", p, status, data)
			continue
		}
		add(p, data)
		for id := range ids {
			id, _, _ = strings.Cut(id, "#")
			if !visited[id] {
				queue = append(queue, id)
			}
		}
	}
	// A Queue 2 record pushed to its owner's stream (Oem.Ooblab).
	push := openSSEAs(t, b, "vms", "vms-pw-2", "?%24filter=MessageId+eq+%27Ooblab.1.0.Queue2Record%27")
	if err := b.Queues.Queue2().Bind("vms", 0x42); err != nil {
		t.Fatal(err)
	}
	if err := b.Queues.Queue2().Write(record.Record{Requester: 0x42, MsgID: 7, Count: 1, Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	pushed, err := json.Marshal(push())
	if err != nil {
		t.Fatal(err)
	}
	add("a Queue 2 push", pushed)
	_, _, data := do(t, hc, b, "GET", "/redfish/v1/Systems/2", "admin", "admin-pw-1", "")
	add("an error", data)
	_, _, data = do(t, hc, b, "POST", "/redfish/v1/Managers/1/Actions/Oem/OoblabManager.QueueCommand", "vms", "vms-pw-2", `{"Command":4,"Data":"AA=="}`)
	add("QueueCommand", data)
	if status, _, data := do(t, hc, b, "POST", "/redfish/v1/EventService/Actions/EventService.SubmitTestEvent", "vms", "vms-pw-2", ""); status != 204 {
		t.Fatalf("SubmitTestEvent: %d %s", status, data)
	}
	select {
	case ev := <-events:
		add("an event", ev)
	case <-time.After(10 * time.Second):
		t.Fatal("no event delivered to the subscription")
	}

	var seen []string
	for typ := range types {
		seen = append(seen, typ)
		ns, name, ok := cutType(typ)
		if !ok {
			t.Errorf("@odata.type %q is not #Namespace.Type", typ)
			continue
		}
		base, _, _ := strings.Cut(ns, ".")
		switch {
		case strings.HasPrefix(base, "Ooblab"):
			if uriOf[ns] != oemURI || uriOf[base] != oemURI {
				t.Errorf("%s: $metadata includes %s from %q and %s from %q, want the OEM schema %s", typ, ns, uriOf[ns], base, uriOf[base], oemURI)
			}
			if !oemDefined[ns+"."+name] {
				t.Errorf("%s: the OEM schema does not define %s.%s", typ, ns, name)
			}
		case uriOf[ns] != "http://redfish.dmtf.org/schemas/v1/"+base+"_v1.xml" || uriOf[base] != uriOf[ns]:
			t.Errorf("%s: $metadata includes %s from %q and %s from %q, want DMTF's %s_v1.xml", typ, ns, uriOf[ns], base, uriOf[base], base)
		}
	}
	// Nor does $metadata name a version the service no longer emits (but
	// the ServiceContainer's and the common types' namespaces).
	for ns := range uriOf {
		base, ver, versioned := strings.Cut(ns, ".")
		if versioned && ns != "ServiceRoot.v1_0_0" && ns != "Resource.v1_0_0" && ns != "RedfishExtensions.v1_0_0" &&
			!types["#"+ns+"."+base] {
			t.Errorf("$metadata includes %s (%s), which no resource's @odata.type names", ns, ver)
		}
	}
	// The OEM action the Manager advertises is defined too.
	if !oemDefined["OoblabManager.QueueCommand"] {
		t.Error("the OEM schema does not define the action OoblabManager.QueueCommand")
	}
	slices.Sort(seen)
	t.Logf("%d resources, %d types: %s", len(visited), len(seen), strings.Join(seen, " "))
	for _, want := range []string{"#Session.v1_7_0.Session", "#EventDestination.v1_14_0.EventDestination", "#Event.v1_9_0.Event",
		"#Message.v1_2_0.Message", "#ActionInfo.v1_4_0.ActionInfo", "#OoblabLogEntry.v1_0_0.OoblabLogEntry", "#OoblabQueueCommandResponse.v1_0_0.OoblabQueueCommandResponse",
		"#OoblabEvent.v1_0_0.OoblabEvent"} {
		if !types[want] {
			t.Errorf("the walk never saw %s", want)
		}
	}
}

// cutType splits "#Namespace.Type" at its last dot.
func cutType(typ string) (ns, name string, ok bool) {
	s, ok := strings.CutPrefix(typ, "#")
	if !ok {
		return "", "", false
	}
	i := strings.LastIndex(s, ".")
	if i <= 0 || i == len(s)-1 {
		return "", "", false
	}
	return s[:i], s[i+1:], true
}

// TestODataServiceDocument: /redfish/v1/odata, read without a login, lists
// the service root and every resource it links to, by name and URL.
func TestODataServiceDocument(t *testing.T) {
	b, _ := start(t)
	hc := b.RedfishClient()
	status, _, data := do(t, hc, b, "GET", "/redfish/v1/odata", "", "", "")
	if status != 200 {
		t.Fatalf("GET odata without login: %d %s", status, data)
	}
	var doc struct {
		Context string `json:"@odata.context"`
		Value   []struct{ Name, Kind, URL string }
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, v := range doc.Value {
		if v.Kind != "Singleton" {
			t.Errorf("%s: kind %q", v.Name, v.Kind)
		}
		got[v.Name] = v.URL
	}
	if doc.Context != "/redfish/v1/$metadata" || got["Service"] != "/redfish/v1/" {
		t.Errorf("context %q, Service at %q", doc.Context, got["Service"])
	}
	_, _, data = do(t, hc, b, "GET", "/redfish/v1", "", "", "")
	var root map[string]any
	if err := json.Unmarshal(data, &root); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"Service": "/redfish/v1/"}
	links := root["Links"].(map[string]any)
	for _, obj := range []map[string]any{root, links} {
		for k, v := range obj {
			if m, ok := v.(map[string]any); ok && m["@odata.id"] != nil {
				want[k] = m["@odata.id"].(string)
			}
		}
	}
	if len(want) < 8 {
		t.Fatalf("the service root links to only %v", want)
	}
	for name, uri := range want {
		if got[name] != uri {
			t.Errorf("service document: %s at %q, the root links it at %q", name, got[name], uri)
		}
	}
	if len(got) != len(want) {
		t.Errorf("service document lists %v, the root links %v", got, want)
	}
}
