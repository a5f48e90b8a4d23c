package redfish

import (
	_ "embed"
	"net/http"
	"strings"
)

// The service's schema documents (DSP0266 "Service metadata"): $metadata
// names, for every resource type the service serves, the DMTF CSDL file
// and the namespaces — the unversioned one and the version its
// @odata.type names — and the Ooblab OEM CSDL served beside it. Both are
// readable without a login, as /redfish/v1 and /redfish/v1/odata are.
const (
	metadataURI  = v1 + "/$metadata"
	oemSchemaURI = v1 + "/Schemas/Ooblab_v1.xml"
	dmtfSchemas  = "http://redfish.dmtf.org/schemas/v1/"
)

// servedTypes are the versioned namespaces of the @odata.types this service
// emits; a collection type has no version. TestMetadataNamesEveryType
// walks the tree and fails when a handler's type is missing here.
var servedTypes = []string{
	"ServiceRoot.v1_0_0", // ServiceContainer, which the Service container extends
	"ServiceRoot.v1_17_0",
	"SessionService.v1_1_9",
	"Session.v1_7_0",
	"SessionCollection",
	"AccountService.v1_15_0",
	"ManagerAccount.v1_12_0",
	"ManagerAccountCollection",
	"Role.v1_3_2",
	"RoleCollection",
	"ComputerSystem.v1_20_0",
	"ComputerSystemCollection",
	"ActionInfo.v1_4_0",
	"Chassis.v1_25_0",
	"ChassisCollection",
	"Sensor.v1_9_0",
	"SensorCollection",
	"Thermal.v1_7_3",
	"Power.v1_7_3",
	"Manager.v1_19_0",
	"ManagerCollection",
	"ManagerNetworkProtocol.v1_10_0",
	"LogService.v1_6_0",
	"LogServiceCollection",
	"LogEntry.v1_16_0",
	"LogEntryCollection",
	"EventService.v1_10_0",
	"EventDestination.v1_14_0",
	"EventDestinationCollection",
	"Event.v1_9_0",
	"Message.v1_2_0",
	"Resource.v1_0_0", // Status, Oem and the other common types
}

// oemNamespaces are the namespaces schemas/Ooblab_v1.xml defines.
var oemNamespaces = []string{
	"OoblabManager",
	"OoblabLogEntry", "OoblabLogEntry.v1_0_0",
	"OoblabEventDestination", "OoblabEventDestination.v1_0_0",
	"OoblabEvent", "OoblabEvent.v1_0_0",
	"OoblabQueueCommandResponse", "OoblabQueueCommandResponse.v1_0_0",
}

//go:embed schemas/Ooblab_v1.xml
var oemSchema []byte

var metadataDoc = buildMetadata()

// buildMetadata renders $metadata: one edmx:Reference per schema file, in
// servedTypes' order, then the Service entity container.
func buildMetadata() []byte {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	b.WriteString(`<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0">` + "\n")
	ref := func(uri string, ns ...string) {
		b.WriteString(`  <edmx:Reference Uri="` + uri + `">` + "\n")
		for _, n := range ns {
			b.WriteString(`    <edmx:Include Namespace="` + n + `"/>` + "\n")
		}
		b.WriteString("  </edmx:Reference>\n")
	}
	var order []string
	byFile := map[string][]string{}
	for _, t := range servedTypes {
		base, _, versioned := strings.Cut(t, ".")
		if _, seen := byFile[base]; !seen {
			order = append(order, base)
			byFile[base] = []string{base}
		}
		if versioned {
			byFile[base] = append(byFile[base], t)
		}
	}
	for _, base := range order {
		ref(dmtfSchemas+base+"_v1.xml", byFile[base]...)
	}
	b.WriteString(`  <edmx:Reference Uri="` + dmtfSchemas + `RedfishExtensions_v1.xml">` + "\n")
	b.WriteString(`    <edmx:Include Namespace="RedfishExtensions.v1_0_0" Alias="Redfish"/>` + "\n")
	b.WriteString("  </edmx:Reference>\n")
	ref(oemSchemaURI, oemNamespaces...)
	b.WriteString("  <edmx:DataServices>\n")
	b.WriteString(`    <Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="Service">` + "\n")
	b.WriteString(`      <EntityContainer Name="Service" Extends="ServiceRoot.v1_0_0.ServiceContainer"/>` + "\n")
	b.WriteString("    </Schema>\n")
	b.WriteString("  </edmx:DataServices>\n")
	b.WriteString("</edmx:Edmx>\n")
	return []byte(b.String())
}

func writeXML(w http.ResponseWriter, r *http.Request, doc []byte) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(doc)
	}
}

func (s *Service) getMetadata(w http.ResponseWriter, r *http.Request, _ *caller) {
	writeXML(w, r, metadataDoc)
}

func (s *Service) getOEMSchema(w http.ResponseWriter, r *http.Request, _ *caller) {
	writeXML(w, r, oemSchema)
}

// getOData serves the OData service document: the service root and each
// top-level resource it links to.
func (s *Service) getOData(w http.ResponseWriter, r *http.Request, _ *caller) {
	vals := []any{map[string]any{"name": "Service", "kind": "Singleton", "url": v1 + "/"}}
	for _, l := range rootLinks {
		vals = append(vals, map[string]any{"name": l.name, "kind": "Singleton", "url": l.uri})
	}
	vals = append(vals, map[string]any{"name": "Sessions", "kind": "Singleton", "url": sessionsURI})
	writeJSON(w, r, http.StatusOK, map[string]any{"@odata.context": metadataURI, "value": vals})
}
