package redfish_test

import (
	"testing"

	"github.com/ooblab/ooblab/bmcsim/sensors"
)

// TestGofishSensors: the chassis' Sensors, Thermal and Power show the
// BMC's sensor model, the readings ipmitool sdr shows: a pinned CPU
// temperature past its upper critical threshold reads back with Health
// Critical.
func TestGofishSensors(t *testing.T) {
	b, _ := start(t)
	if !b.BMC.Sensors().Pin(sensors.CPUTemp, 92) {
		t.Fatal("cannot pin the CPU temperature")
	}
	c := connect(t, b, "viewer", "viewer-pw-3", false)
	chs, err := c.Service.Chassis()
	if err != nil || len(chs) != 1 {
		t.Fatalf("chassis: %v", err)
	}
	ss, err := chs[0].Sensors()
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]float64{}
	for _, s := range ss {
		if s.Reading != nil {
			byID[s.ID] = *s.Reading
		}
		if s.ID == "CPUTemp" && (s.ReadingUnits != "Cel" || string(s.Status.Health) != "Critical") {
			t.Errorf("CPUTemp units %q health %q, want Cel Critical", s.ReadingUnits, s.Status.Health)
		}
	}
	if byID["CPUTemp"] != 92 {
		t.Errorf("CPUTemp reads %v, want 92 (sensors %v)", byID["CPUTemp"], byID)
	}
	for _, id := range []string{"InletTemp", "Fan1", "Fan2", "PSUInputPower", "12VRail"} {
		if _, ok := byID[id]; !ok {
			t.Errorf("no sensor %s (sensors %v)", id, byID)
		}
	}
	th, err := chs[0].Thermal()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, tmp := range th.Temperatures {
		if tmp.Name == "CPU Temp" && tmp.ReadingCelsius != nil && *tmp.ReadingCelsius == 92 {
			found = true
		}
	}
	if !found || len(th.Fans) != 2 {
		t.Errorf("Thermal: CPU Temp 92 found %v, %d fans", found, len(th.Fans))
	}
	pw, err := chs[0].Power()
	if err != nil {
		t.Fatal(err)
	}
	if len(pw.PowerControl) != 1 || pw.PowerControl[0].PowerConsumedWatts == nil || *pw.PowerControl[0].PowerConsumedWatts <= 0 || len(pw.Voltages) != 1 {
		t.Errorf("Power: %+v", pw.PowerControl)
	}
}
