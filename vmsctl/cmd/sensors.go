package cmd

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ooblab/ooblab/internal/inventory"
	"github.com/ooblab/ooblab/vmsctl/client"
)

// sensorsOut is the output of host sensors.
type sensorsOut struct {
	Host    string          `json:"host"`
	BMC     string          `json:"bmc"`
	Sensors []client.Sensor `json:"sensors"`
}

// hostSensorsCmd is host sensors HOST.
func (a *App) hostSensorsCmd() *cobra.Command {
	return &cobra.Command{
		Use: "sensors HOST", Short: "The host's sensors from its BMC: temperatures, fans, power, voltages, power state (SDR and readings over RMCP+)",
		Args: exactArgs(1), ValidArgsFunction: a.hostNames,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withHostBMC(cmd, args[0], func(ctx context.Context, cl *client.Client, h *inventory.Host) error {
				ss, err := cl.HostSensors(ctx, args[0])
				if err != nil {
					return err
				}
				out := sensorsOut{Host: args[0], BMC: h.BMC.Addr, Sensors: ss}
				if out.Sensors == nil {
					out.Sensors = []client.Sensor{}
				}
				return a.emit(out, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "SENSOR\tTYPE\tREADING\tSTATUS")
					for _, s := range out.Sensors {
						r := fmt.Sprintf("%.2f %s", s.Value, s.Unit)
						if !s.Analog {
							r = fmt.Sprintf("0x%04x (state bits)", uint16(s.Value))
						}
						if s.Status == "unavailable" {
							r = "-"
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Name, s.Type, r, s.Status)
					}
					tw.Flush()
					fmt.Fprintf(w, "%s: %d sensor(s) from BMC %s\n", out.Host, len(out.Sensors), out.BMC)
				})
			})
		},
	}
}
