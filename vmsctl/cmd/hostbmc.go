package cmd

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ooblab/ooblab/internal/inventory"
	"github.com/ooblab/ooblab/internal/vmsg"
	"github.com/ooblab/ooblab/vmsctl/client"
)

// powerOut is the output of host power.
type powerOut struct {
	Host string `json:"host"`
	BMC  string `json:"bmc"`
	// Action is the control sent ("" for status).
	Action string `json:"action,omitempty"`
	// Power is the state the BMC reports, read after the action.
	Power          string  `json:"power"`
	LastPowerEvent string  `json:"last_power_event,omitempty"`
	PowerFault     bool    `json:"power_fault,omitempty"`
	LatencyMs      float64 `json:"latency_ms"`
}

// selOut is the output of host sel.
type selOut struct {
	Host    string     `json:"host"`
	BMC     string     `json:"bmc"`
	Entries []selEntry `json:"entries"`
}

type selEntry struct {
	ID             uint16    `json:"id"`
	Time           time.Time `json:"time,omitzero"`
	RecordType     string    `json:"record_type"` // "0x02"
	Kind           string    `json:"kind"`        // system event, oem timestamped, oem
	GeneratorID    string    `json:"generator_id,omitempty"`
	SensorType     string    `json:"sensor_type,omitempty"`
	SensorNumber   *uint8    `json:"sensor_number,omitempty"`
	Event          string    `json:"event,omitempty"`
	Deasserted     bool      `json:"deasserted,omitempty"`
	ManufacturerID uint32    `json:"manufacturer_id,omitempty"`
	OEMData        string    `json:"oem_data,omitempty"`
	Alert          *selAlert `json:"alert,omitempty"`
	Raw            string    `json:"raw"`
}

// selAlert is an hvagent alert record.
type selAlert struct {
	Class     string `json:"class"`
	Command   string `json:"command,omitempty"`
	RequestID string `json:"request_id,omitempty"` // low 32 bits, 8 hex digits
}

func selEntryOut(e client.SELEntry) selEntry {
	o := selEntry{ID: e.ID, RecordType: fmt.Sprintf("%#02x", e.Type), Raw: hex.EncodeToString(e.Raw)}
	if !e.Time.IsZero() {
		o.Time = e.Time.UTC()
	}
	switch {
	case e.Type == 0x02:
		n := e.SensorNumber
		o.Kind, o.GeneratorID, o.SensorType, o.SensorNumber, o.Event, o.Deasserted =
			"system event", fmt.Sprintf("%#04x", e.GeneratorID), e.SensorType, &n, e.Event, e.Deasserted
	case e.Type >= 0xC0 && e.Type <= 0xDF:
		o.Kind, o.ManufacturerID, o.OEMData = "oem timestamped", e.ManufacturerID, hex.EncodeToString(e.OEMData)
	default:
		o.Kind, o.OEMData = "oem", hex.EncodeToString(e.OEMData)
	}
	if a := e.Alert; a != nil {
		o.Alert = &selAlert{Class: a.Class.String()}
		if a.Command != 0 {
			o.Alert.Command = vmsg.Command(a.Command).String()
		}
		if a.RequestID != 0 {
			o.Alert.RequestID = fmt.Sprintf("%08x", a.RequestID)
		}
	}
	return o
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

// hostPowerCmd is host power status|on|off|cycle|reset|soft HOST.
func (a *App) hostPowerCmd() *cobra.Command {
	p := group(&cobra.Command{Use: "power", Short: "The host's power through its BMC (IPMI chassis commands over RMCP+)"})
	run := func(cmd *cobra.Command, host string, act client.PowerAction) error {
		return a.withHostBMC(cmd, host, func(ctx context.Context, cl *client.Client, h *inventory.Host) error {
			start := time.Now()
			if act != "" {
				if err := cl.HostPowerControl(ctx, host, act); err != nil {
					return err
				}
			}
			st, err := cl.HostPower(ctx, host)
			if err != nil {
				return err
			}
			out := powerOut{Host: host, BMC: h.BMC.Addr, Action: string(act), Power: onOff(st.On), LastPowerEvent: st.LastEvent,
				PowerFault: st.Fault, LatencyMs: ms(time.Since(start))}
			return a.emit(out, func(w io.Writer) {
				if act != "" {
					note := ""
					if act == client.PowerSoft && st.On {
						note = "; the OS powers off when it acts on the button (see 'host power status')"
					}
					fmt.Fprintf(w, "%s: power %s sent to the BMC; power is now %s%s (BMC %s, %s)\n", host, act, out.Power, note, out.BMC, roundLatency(time.Since(start)))
					return
				}
				extra := ""
				if out.LastPowerEvent != "" {
					extra += ", last power event: " + out.LastPowerEvent
				}
				if out.PowerFault {
					extra += ", POWER FAULT"
				}
				fmt.Fprintf(w, "%s: power %s%s (BMC %s, %s)\n", host, out.Power, extra, out.BMC, roundLatency(time.Since(start)))
			})
		})
	}
	p.AddCommand(&cobra.Command{
		Use: "status HOST", Short: "Show whether the host is powered on", Args: exactArgs(1), ValidArgsFunction: a.hostNames,
		RunE: func(cmd *cobra.Command, args []string) error { return run(cmd, args[0], "") },
	})
	shorts := map[client.PowerAction]string{
		client.PowerOn:    "Power the host on",
		client.PowerOff:   "Power the host off at once (no shutdown)",
		client.PowerCycle: "Power the host off, then on",
		client.PowerReset: "Hard-reset the host",
		client.PowerSoft:  "Ask the host's OS to shut down (ACPI power button)",
	}
	for _, act := range client.PowerActions {
		p.AddCommand(&cobra.Command{
			Use: string(act) + " HOST", Short: shorts[act], Args: exactArgs(1), ValidArgsFunction: a.hostNames,
			RunE: func(cmd *cobra.Command, args []string) error { return run(cmd, args[0], act) },
		})
	}
	return p
}

// hostSELCmd is host sel HOST.
func (a *App) hostSELCmd() *cobra.Command {
	return &cobra.Command{
		Use: "sel HOST", Short: "The host's System Event Log from its BMC (hvagent's alerts included, decoded)",
		Args: exactArgs(1), ValidArgsFunction: a.hostNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withHostBMC(cmd, args[0], func(ctx context.Context, cl *client.Client, h *inventory.Host) error {
				es, err := cl.HostSEL(ctx, args[0])
				if err != nil {
					return err
				}
				out := selOut{Host: args[0], BMC: h.BMC.Addr, Entries: make([]selEntry, 0, len(es))}
				for _, e := range es {
					out.Entries = append(out.Entries, selEntryOut(e))
				}
				return a.emit(out, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "ID\tTIME\tKIND\tEVENT")
					for _, e := range out.Entries {
						ts := "-"
						if !e.Time.IsZero() {
							ts = e.Time.Local().Format(time.DateTime)
						}
						var ev string
						switch {
						case e.Alert != nil:
							ev = "hvagent alert: " + e.Alert.Class
							if e.Alert.Command != "" {
								ev += ", " + e.Alert.Command
							}
							if e.Alert.RequestID != "" {
								ev += ", request " + e.Alert.RequestID
							}
						case e.Kind == "system event":
							ev = fmt.Sprintf("%s #%d: %s", e.SensorType, *e.SensorNumber, e.Event)
							if e.Deasserted {
								ev += " (deasserted)"
							}
						default:
							ev = fmt.Sprintf("manufacturer %d, data %s", e.ManufacturerID, e.OEMData)
						}
						fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", e.ID, ts, e.Kind, ev)
					}
					tw.Flush()
					fmt.Fprintf(w, "%s: %d SEL record(s) from BMC %s\n", out.Host, len(out.Entries), out.BMC)
				})
			})
		},
	}
}

// withHostBMC runs fn with a client, host's inventory entry and the
// command's deadline: the frame of the host commands that talk to its BMC.
func (a *App) withHostBMC(cmd *cobra.Command, host string, fn func(context.Context, *client.Client, *inventory.Host) error) error {
	cl, err := a.client()
	if err != nil {
		return err
	}
	defer cl.Close()
	h, err := a.inv.Host(host)
	if err != nil {
		return err
	}
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	return fn(ctx, cl, h)
}
