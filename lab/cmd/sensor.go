package cmd

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/ooblab/ooblab/lab/ctl"
)

// sensor is `sensor HOST SENSOR VALUE` and `sensor HOST SENSOR --release`.
func (e *env) sensor() *cobra.Command {
	var release bool
	c := &cobra.Command{
		Use:   `sensor HOST "SENSOR NAME" VALUE | sensor HOST "SENSOR NAME" --release`,
		Short: "pin a sensor reading of a host's BMC (a crossed threshold adds its SEL entry) until --release",
		Args:  cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(e.ctx, 15*time.Second)
			defer cancel()
			var out string
			var err error
			switch {
			case release && len(args) == 2:
				out, err = ctl.ReleaseSensor(ctx, e.dir, args[0], args[1])
			case !release && len(args) == 3:
				v, perr := strconv.ParseFloat(args[2], 64)
				if perr != nil {
					return fmt.Errorf("value %q: not a number", args[2])
				}
				out, err = ctl.PinSensor(ctx, e.dir, args[0], args[1], v)
			default:
				return fmt.Errorf("want HOST SENSOR VALUE, or HOST SENSOR --release")
			}
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), args[0]+": "+out)
			return nil
		},
	}
	c.Flags().BoolVar(&release, "release", false, "let the sensor follow the host again")
	return c
}
