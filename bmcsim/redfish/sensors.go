package redfish

import (
	"math"
	"net/http"
	"slices"
	"strings"
)

const sensorsURI = chassisURI + "/Sensors"

// health is a sensor's Status.Health from its asserted thresholds.
func health(s Sensor) string {
	h := "OK"
	for _, a := range s.Asserted {
		switch {
		case strings.HasSuffix(a, "Critical"), strings.HasSuffix(a, "Fatal"):
			return "Critical"
		case strings.HasSuffix(a, "Caution"):
			h = "Warning"
		}
	}
	return h
}

func round(v float64) float64 { return math.Round(v*100) / 100 }

func sensorBody(s Sensor) map[string]any {
	th := map[string]any{}
	for k, v := range s.Thresholds {
		th[k] = map[string]any{"Reading": round(v)}
	}
	state := "Enabled"
	var reading any = round(s.Reading)
	if !s.Available {
		state, reading = "UnavailableOffline", nil
	}
	return map[string]any{
		"@odata.id":       sensorsURI + "/" + s.ID,
		"@odata.type":     "#Sensor.v1_9_0.Sensor",
		"Id":              s.ID,
		"Name":            s.Name,
		"ReadingType":     s.ReadingType,
		"ReadingUnits":    s.Units,
		"Reading":         reading,
		"PhysicalContext": s.Context,
		"Thresholds":      th,
		"Status":          map[string]any{"State": state, "Health": health(s)},
	}
}

func (s *Service) getSensors(w http.ResponseWriter, r *http.Request, _ *caller) {
	var ids []string
	for _, se := range s.backend.Sensors() {
		ids = append(ids, sensorsURI+"/"+se.ID)
	}
	writeResource(w, r, http.StatusOK, collection(sensorsURI, "SensorCollection", "Sensors", ids))
}

func (s *Service) getSensor(w http.ResponseWriter, r *http.Request, _ *caller) {
	id := r.PathValue("id")
	i := slices.IndexFunc(s.backend.Sensors(), func(se Sensor) bool { return se.ID == id })
	if i < 0 {
		writeError(w, errNotFound(r.URL.Path))
		return
	}
	writeResource(w, r, http.StatusOK, sensorBody(s.backend.Sensors()[i]))
}

// getThermal is the Thermal resource (deprecated by ThermalSubsystem but
// what redfishtool and older tools read): temperatures and fans.
func (s *Service) getThermal(w http.ResponseWriter, r *http.Request, _ *caller) {
	temps, fans := []any{}, []any{}
	for _, se := range s.backend.Sensors() {
		m := map[string]any{
			"@odata.id":       chassisURI + "/Thermal#/" + se.ID,
			"MemberId":        se.ID,
			"Name":            se.Name,
			"PhysicalContext": se.Context,
			"Status":          map[string]any{"State": "Enabled", "Health": health(se)},
			"RelatedItem":     []any{odataID(chassisURI)},
		}
		for k, v := range se.Thresholds {
			suffix := map[string]string{"UpperCaution": "NonCritical", "UpperCritical": "Critical", "UpperFatal": "Fatal",
				"LowerCaution": "NonCritical", "LowerCritical": "Critical", "LowerFatal": "Fatal"}[k]
			dir := "Upper"
			if strings.HasPrefix(k, "Lower") {
				dir = "Lower"
			}
			m[dir+"Threshold"+suffix] = round(v)
		}
		switch se.ReadingType {
		case "Temperature":
			m["@odata.id"] = chassisURI + "/Thermal#/Temperatures/" + itoa(len(temps))
			m["ReadingCelsius"] = round(se.Reading)
			temps = append(temps, m)
		case "Rotational":
			m["@odata.id"] = chassisURI + "/Thermal#/Fans/" + itoa(len(fans))
			m["Reading"] = round(se.Reading)
			m["ReadingUnits"] = "RPM"
			fans = append(fans, m)
		}
	}
	writeResource(w, r, http.StatusOK, map[string]any{
		"@odata.id":    chassisURI + "/Thermal",
		"@odata.type":  "#Thermal.v1_7_3.Thermal",
		"Id":           "Thermal",
		"Name":         "Thermal",
		"Temperatures": temps,
		"Fans":         fans,
	})
}

// getPower is the Power resource: consumption (DCMI's statistics) and
// voltages.
func (s *Service) getPower(w http.ResponseWriter, r *http.Request, _ *caller) {
	ps := s.backend.PowerStats()
	volts := []any{}
	for _, se := range s.backend.Sensors() {
		if se.ReadingType != "Voltage" {
			continue
		}
		m := map[string]any{
			"@odata.id":       chassisURI + "/Power#/Voltages/" + itoa(len(volts)),
			"MemberId":        se.ID,
			"Name":            se.Name,
			"ReadingVolts":    round(se.Reading),
			"PhysicalContext": se.Context,
			"Status":          map[string]any{"State": "Enabled", "Health": health(se)},
		}
		if v, ok := se.Thresholds["UpperCritical"]; ok {
			m["UpperThresholdCritical"] = round(v)
		}
		if v, ok := se.Thresholds["LowerCritical"]; ok {
			m["LowerThresholdCritical"] = round(v)
		}
		volts = append(volts, m)
	}
	writeResource(w, r, http.StatusOK, map[string]any{
		"@odata.id":   chassisURI + "/Power",
		"@odata.type": "#Power.v1_7_3.Power",
		"Id":          "Power",
		"Name":        "Power",
		"PowerControl": []any{map[string]any{
			"@odata.id":          chassisURI + "/Power#/PowerControl/0",
			"MemberId":           "0",
			"Name":               "System Input Power",
			"PowerConsumedWatts": round(ps.Now),
			"PowerMetrics": map[string]any{
				"IntervalInMin":        int(ps.Period.Minutes()),
				"MinConsumedWatts":     round(ps.Min),
				"MaxConsumedWatts":     round(ps.Max),
				"AverageConsumedWatts": round(ps.Avg),
			},
		}},
		"Voltages": volts,
	})
}
