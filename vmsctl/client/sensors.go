package client

import (
	"context"
	"fmt"
	"strings"

	"github.com/bougou/go-ipmi/pkg/client"
)

// Sensor is one sensor of a host's BMC as its SDR and a reading give it.
type Sensor struct {
	Number uint8   `json:"number"`
	Name   string  `json:"name"`
	Type   string  `json:"type"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
	// Analog is false for a discrete sensor (Value is then its state bits).
	Analog bool `json:"analog"`
	// Status: "ok", "unavailable", or the threshold the reading is past
	// ("upper critical", …).
	Status string `json:"status"`
}

// HostSensors reads every sensor of host's BMC: its SDR repository, then a
// reading of each (IPMI v2.0 §35, §33), over RMCP+ as the inventory's BMC
// user.
func (c *Client) HostSensors(ctx context.Context, host string) ([]Sensor, error) {
	var out []Sensor
	err := c.withBMC(ctx, host, func(bc *client.Client) error {
		ss, err := bc.GetSensors(ctx)
		if err != nil {
			return fmt.Errorf("sensors: %w", err)
		}
		for _, s := range ss {
			x := Sensor{Number: s.Number, Name: s.Name, Type: s.SensorType.String(), Value: s.Value,
				Unit: strings.TrimSpace(s.SensorUnit.String()), Analog: s.HasAnalogReading, Status: "ok"}
			switch {
			case s.NotPresent || s.ScanningDisabled || !s.ReadingAvailable:
				x.Status = "unavailable"
			case s.HasAnalogReading:
				if st, ok := thresholdWords[string(s.Threshold.ThresholdStatus)]; ok {
					x.Status = st
				}
			}
			out = append(out, x)
		}
		return nil
	})
	return out, err
}

var thresholdWords = map[string]string{"lnc": "lower non-critical", "lcr": "lower critical", "lnr": "lower non-recoverable",
	"unc": "upper non-critical", "ucr": "upper critical", "unr": "upper non-recoverable"}
