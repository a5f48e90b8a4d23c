package cmd

import (
	"github.com/spf13/cobra"
)

// hostNames completes HOST arguments from the inventory.
func (a *App) hostNames(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 || a.loadInventory() != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var names []string
	for _, h := range a.inv.Hosts {
		names = append(names, h.Name)
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

// group makes a command that only holds subcommands fail with a usage
// error (exit 2) when called bare or with an unknown subcommand.
func group(c *cobra.Command) *cobra.Command {
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usagef("unknown command %q for %q", args[0], cmd.CommandPath())
		}
		cmd.Help()
		return usagef("%s needs a subcommand", cmd.CommandPath())
	}
	return c
}
