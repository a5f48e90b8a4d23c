package redfish

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/bougou/go-ipmi/pkg/types"

	"github.com/ooblab/ooblab/internal/oem"
)

func (s *Service) getManager(w http.ResponseWriter, r *http.Request, _ *caller) {
	info := s.backend.Info(r.Context())
	writeResource(w, r, http.StatusOK, map[string]any{
		"@odata.id":       managerURI,
		"@odata.type":     "#Manager.v1_19_0.Manager",
		"Id":              "1",
		"Name":            "bmcsim " + info.Name,
		"ManagerType":     "BMC",
		"Manufacturer":    "ooblab",
		"Model":           "bmcsim",
		"FirmwareVersion": info.FirmwareVersion,
		"UUID":            info.UUID,
		"PowerState":      "On",
		"Status":          map[string]any{"State": "Enabled", "Health": "OK"},
		"NetworkProtocol": odataID(managerURI + "/NetworkProtocol"),
		"LogServices":     odataID(managerURI + "/LogServices"),
		"SerialConsole": map[string]any{
			"ServiceEnabled":        info.SerialConsole,
			"MaxConcurrentSessions": 1,
			"ConnectTypesSupported": []string{"IPMI"},
		},
		"Actions": map[string]any{"Oem": map[string]any{"#OoblabManager.QueueCommand": map[string]any{
			"target":                          queueActionURI,
			"Command@Redfish.AllowableValues": queueCommands,
		}}},
		"Links": map[string]any{
			"ManagerForServers": []any{odataID(systemURI)},
			"ManagerForChassis": []any{odataID(chassisURI)},
		},
	})
}

func (s *Service) getNetworkProtocol(w http.ResponseWriter, r *http.Request, _ *caller) {
	info := s.backend.Info(r.Context())
	writeResource(w, r, http.StatusOK, map[string]any{
		"@odata.id":   managerURI + "/NetworkProtocol",
		"@odata.type": "#ManagerNetworkProtocol.v1_10_0.ManagerNetworkProtocol",
		"Id":          "NetworkProtocol",
		"Name":        "Manager Network Protocol",
		"HostName":    info.Name,
		"IPMI":        map[string]any{"ProtocolEnabled": true, "Port": info.IPMIPort},
		"HTTPS":       map[string]any{"ProtocolEnabled": true, "Port": s.opts.HTTPSPort},
		"HTTP":        map[string]any{"ProtocolEnabled": false},
		"SSH":         map[string]any{"ProtocolEnabled": false},
		"Status":      map[string]any{"State": "Enabled", "Health": "OK"},
	})
}

func (s *Service) getLogService(w http.ResponseWriter, r *http.Request, _ *caller) {
	info := s.backend.Info(r.Context())
	writeResource(w, r, http.StatusOK, map[string]any{
		"@odata.id":          selURI,
		"@odata.type":        "#LogService.v1_6_0.LogService",
		"Id":                 "SEL",
		"Name":               "System Event Log",
		"Description":        "The IPMI SEL: the records ipmitool sel list shows, hvagent's alerts decoded",
		"LogEntryType":       "SEL",
		"MaxNumberOfRecords": info.SELCapacity,
		"OverWritePolicy":    "WrapsWhenFull",
		"ServiceEnabled":     true,
		"DateTime":           s.opts.Now().UTC().Format(time.RFC3339),
		"Status":             map[string]any{"State": "Enabled", "Health": "OK"},
		"Entries":            odataID(selURI + "/Entries"),
		"Actions": map[string]any{"#LogService.ClearLog": map[string]any{
			"target": selURI + "/Actions/LogService.ClearLog",
		}},
	})
}

// logEntry renders one SEL record as a LogEntry; ok is false for a record
// go-ipmi cannot parse.
func logEntry(rec [16]byte, iana uint32) map[string]any {
	id := strconv.Itoa(int(binary.LittleEndian.Uint16(rec[0:2])))
	e := map[string]any{
		"@odata.id":   selURI + "/Entries/" + id,
		"@odata.type": "#LogEntry.v1_16_0.LogEntry",
		"Id":          id,
		"Name":        "SEL entry " + id,
		"EntryType":   "SEL",
		"Severity":    "OK",
		"Message":     "",
		// The 16-byte record as ipmitool reads it, for clients that decode
		// SEL records themselves (vmsctl host sel over Redfish).
		"Oem": map[string]any{"Ooblab": map[string]any{
			"@odata.type": "#OoblabLogEntry.v1_0_0.OoblabLogEntry",
			"Record":      hex.EncodeToString(rec[:]),
		}},
	}
	sel, err := types.ParseSEL(rec[:])
	switch {
	case err != nil:
		e["Message"] = fmt.Sprintf("unparsable SEL record % x", rec[:])
	case sel.Standard != nil:
		st := sel.Standard
		e["Created"] = st.Timestamp.UTC().Format(time.RFC3339)
		e["SensorType"] = st.SensorType.String()
		e["SensorNumber"] = int(st.SensorNumber)
		e["GeneratorId"] = fmt.Sprintf("0x%04X", uint16(st.GeneratorID))
		e["Message"] = st.EventString()
		if st.EventDir {
			e["EntryCode"] = "Deassert"
		} else {
			e["EntryCode"] = "Assert"
		}
		e["Severity"] = "Warning"
	case sel.OEMTimestamped != nil:
		o := sel.OEMTimestamped
		e["Created"] = o.Timestamp.UTC().Format(time.RFC3339)
		e["EntryType"] = "Oem"
		e["OemRecordFormat"] = fmt.Sprintf("IPMI OEM timestamped, manufacturer %d", o.ManufacturerID)
		if a, ok := oem.ParseSELAlert(rec[:], oem.IANA(iana)); ok {
			e["Message"] = fmt.Sprintf("hvagent alert: %s (command %d, request %#08x)", a.Class, a.Command, a.RequestID)
			e["MessageId"] = "Ooblab.1.0.HvagentAlert"
			e["MessageArgs"] = []string{a.Class.String(), strconv.Itoa(int(a.Command)), strconv.FormatUint(uint64(a.RequestID), 10)}
			e["Severity"] = "Warning"
		} else {
			e["Message"] = fmt.Sprintf("OEM record % x", o.OEMDefined[:])
		}
	default:
		e["EntryType"] = "Oem"
		e["Message"] = fmt.Sprintf("OEM record % x", rec[3:16])
	}
	return e
}

func (s *Service) getLogEntries(w http.ResponseWriter, r *http.Request, _ *caller) {
	iana := s.backend.Info(r.Context()).IANA
	recs := s.backend.SEL()
	ms := make([]any, len(recs))
	for i, rec := range recs {
		ms[i] = logEntry(rec, iana)
	}
	writeResource(w, r, http.StatusOK, map[string]any{
		"@odata.id":           selURI + "/Entries",
		"@odata.type":         "#LogEntryCollection.LogEntryCollection",
		"Name":                "SEL Entries",
		"Members":             ms,
		"Members@odata.count": len(ms),
	})
}

func (s *Service) getLogEntry(w http.ResponseWriter, r *http.Request, _ *caller) {
	id := r.PathValue("id")
	iana := s.backend.Info(r.Context()).IANA
	for _, rec := range s.backend.SEL() {
		if strconv.Itoa(int(binary.LittleEndian.Uint16(rec[0:2]))) == id {
			writeResource(w, r, http.StatusOK, logEntry(rec, iana))
			return
		}
	}
	writeError(w, errNotFound(r.URL.Path))
}

// clearLogRequest is the body of LogService.ClearLog.
type clearLogRequest struct {
	LogEntriesETag *string
}

func (s *Service) postClearLog(w http.ResponseWriter, r *http.Request, c *caller) {
	body, aerr := readBody(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	if len(body) > 0 {
		var req clearLogRequest
		if aerr := decodeJSON(body, &req); aerr != nil {
			writeError(w, aerr)
			return
		}
	}
	if err := s.backend.ClearSEL(); err != nil {
		writeError(w, errInternal(err))
		return
	}
	s.log.Info("redfish SEL cleared", "user", c.user)
	w.WriteHeader(http.StatusNoContent)
}
