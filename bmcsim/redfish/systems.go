package redfish

import (
	"context"
	"errors"
	"net/http"
	"slices"
)

func powerState(on bool) string {
	if on {
		return "On"
	}
	return "Off"
}

func (s *Service) system(ctx context.Context) map[string]any {
	info := s.backend.Info(ctx)
	on := s.backend.PowerOn(ctx)
	boot := s.backend.Boot()
	health := map[string]any{"State": "Enabled", "Health": "OK"}
	proc := map[string]any{"Status": health}
	if info.Processors > 0 {
		proc["Count"] = info.Processors
	}
	mem := map[string]any{"Status": health}
	if info.MemoryGiB > 0 {
		mem["TotalSystemMemoryGiB"] = info.MemoryGiB
	}
	return map[string]any{
		"@odata.id":        systemURI,
		"@odata.type":      "#ComputerSystem.v1_20_0.ComputerSystem",
		"Id":               "1",
		"Name":             info.Name,
		"HostName":         info.Name,
		"SystemType":       "Physical",
		"Manufacturer":     "ooblab",
		"Model":            "bmcsim QEMU host",
		"SerialNumber":     info.Name,
		"UUID":             info.UUID,
		"PowerState":       powerState(on),
		"Status":           health,
		"ProcessorSummary": proc,
		"MemorySummary":    mem,
		"Boot": map[string]any{
			"BootSourceOverrideTarget":                          boot.Target,
			"BootSourceOverrideEnabled":                         boot.Enabled,
			"BootSourceOverrideMode":                            boot.Mode,
			"BootSourceOverrideTarget@Redfish.AllowableValues":  BootTargets,
			"BootSourceOverrideEnabled@Redfish.AllowableValues": BootEnabledValues,
			"BootSourceOverrideMode@Redfish.AllowableValues":    BootModes,
		},
		"Actions": map[string]any{"#ComputerSystem.Reset": map[string]any{
			"target":                            systemURI + "/Actions/ComputerSystem.Reset",
			"ResetType@Redfish.AllowableValues": ResetTypes,
			"@Redfish.ActionInfo":               systemURI + "/ResetActionInfo",
		}},
		"Links": map[string]any{
			"Chassis":   []any{odataID(chassisURI)},
			"ManagedBy": []any{odataID(managerURI)},
		},
	}
}

func (s *Service) getSystem(w http.ResponseWriter, r *http.Request, _ *caller) {
	writeResource(w, r, http.StatusOK, s.system(r.Context()))
}

// systemPatch is the body of PATCH Systems/1: the boot override only.
type systemPatch struct {
	Boot *bootPatch
}

type bootPatch struct {
	BootSourceOverrideTarget  *string
	BootSourceOverrideEnabled *string
	BootSourceOverrideMode    *string
	// Clients that send back what they read (gofish) echo the annotation.
	AllowableTargets []string `json:"BootSourceOverrideTarget@Redfish.AllowableValues"`
}

// apply checks p's values and returns the override p makes of cur.
func (p *systemPatch) apply(cur Boot) (Boot, *apiError) {
	if p.Boot == nil {
		return cur, nil
	}
	set := func(dst *string, v *string, name string, allowed []string) *apiError {
		if v == nil {
			return nil
		}
		if !slices.Contains(allowed, *v) {
			return &apiError{status: http.StatusBadRequest, key: "PropertyValueNotInList", prop: "Boot/" + name,
				args: []string{*v, name}, message: "The value '" + *v + "' for the property " + name + " is not in the list of acceptable values."}
		}
		*dst = *v
		return nil
	}
	if err := set(&cur.Target, p.Boot.BootSourceOverrideTarget, "BootSourceOverrideTarget", BootTargets); err != nil {
		return cur, err
	}
	if err := set(&cur.Enabled, p.Boot.BootSourceOverrideEnabled, "BootSourceOverrideEnabled", BootEnabledValues); err != nil {
		return cur, err
	}
	if err := set(&cur.Mode, p.Boot.BootSourceOverrideMode, "BootSourceOverrideMode", BootModes); err != nil {
		return cur, err
	}
	return cur, nil
}

func (s *Service) patchSystem(w http.ResponseWriter, r *http.Request, c *caller) {
	body, aerr := readBody(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	if aerr := ifMatch(r, etag(s.system(r.Context()))); aerr != nil {
		writeError(w, aerr)
		return
	}
	var p systemPatch
	if aerr := decodeJSON(body, &p); aerr != nil {
		writeError(w, aerr)
		return
	}
	b, aerr := p.apply(s.backend.Boot())
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	if err := s.backend.SetBoot(b); err != nil {
		writeError(w, errInternal(err))
		return
	}
	s.log.Info("redfish boot override set", "user", c.user, "target", b.Target, "enabled", b.Enabled, "mode", b.Mode)
	writeResource(w, r, http.StatusOK, s.system(r.Context()))
}

// resetRequest is the body of ComputerSystem.Reset.
type resetRequest struct {
	ResetType *string
}

func (s *Service) postReset(w http.ResponseWriter, r *http.Request, c *caller) {
	body, aerr := readBody(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	var req resetRequest
	if aerr := decodeJSON(body, &req); aerr != nil {
		writeError(w, aerr)
		return
	}
	if req.ResetType == nil {
		writeError(w, newError(http.StatusBadRequest, "ActionParameterMissing",
			"The action ComputerSystem.Reset requires the parameter ResetType to be present in the request body.",
			"ComputerSystem.Reset", "ResetType"))
		return
	}
	rt := ResetType(*req.ResetType)
	if !slices.Contains(ResetTypes, rt) {
		writeError(w, newError(http.StatusBadRequest, "ActionParameterValueNotInList",
			"The value '"+string(rt)+"' for the parameter ResetType in the action ComputerSystem.Reset is not in the list of acceptable values.",
			string(rt), "ResetType", "ComputerSystem.Reset"))
		return
	}
	s.powerOp.Lock()
	defer s.powerOp.Unlock()
	before := s.backend.PowerOn(r.Context())
	if err := s.backend.Reset(r.Context(), rt); err != nil {
		s.log.Warn("redfish reset failed", "user", c.user, "reset_type", rt, "err", err)
		if errors.Is(err, ErrNotSupported) {
			writeError(w, newError(http.StatusBadRequest, "ActionParameterNotSupported",
				"The parameter ResetType="+string(rt)+" for the action ComputerSystem.Reset is not supported on the target resource: "+err.Error()+".",
				"ResetType", "ComputerSystem.Reset"))
			return
		}
		writeError(w, errInternal(err))
		return
	}
	s.log.Info("redfish reset", "user", c.user, "reset_type", rt)
	after := s.backend.PowerOn(r.Context())
	s.powerEvent(rt, before, after)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Service) getResetActionInfo(w http.ResponseWriter, r *http.Request, _ *caller) {
	writeResource(w, r, http.StatusOK, map[string]any{
		"@odata.id":   systemURI + "/ResetActionInfo",
		"@odata.type": "#ActionInfo.v1_4_0.ActionInfo",
		"Id":          "ResetActionInfo",
		"Name":        "Reset Action Info",
		"Parameters": []any{map[string]any{
			"Name": "ResetType", "Required": true, "DataType": "String", "AllowableValues": ResetTypes,
		}},
	})
}

func (s *Service) getChassis(w http.ResponseWriter, r *http.Request, _ *caller) {
	info := s.backend.Info(r.Context())
	writeResource(w, r, http.StatusOK, map[string]any{
		"@odata.id":    chassisURI,
		"@odata.type":  "#Chassis.v1_25_0.Chassis",
		"Id":           "1",
		"Name":         info.Name,
		"ChassisType":  "RackMount",
		"Manufacturer": "ooblab",
		"SerialNumber": info.Name,
		"PowerState":   powerState(s.backend.PowerOn(r.Context())),
		"Status":       map[string]any{"State": "Enabled", "Health": "OK"},
		"Sensors":      odataID(sensorsURI),
		"Thermal":      odataID(chassisURI + "/Thermal"),
		"Power":        odataID(chassisURI + "/Power"),
		"Links": map[string]any{
			"ComputerSystems": []any{odataID(systemURI)},
			"ManagedBy":       []any{odataID(managerURI)},
		},
	})
}
