package zmeshctl

import (
	"io"

	"github.com/spf13/cobra"
)

// NewCommand returns the zmeshctl command tree writing results to out and
// diagnostics to errOut.
func NewCommand(out, errOut io.Writer) *cobra.Command {
	k := &kubeFlags{}
	root := &cobra.Command{
		Use:           "zmeshctl",
		Short:         "zmesh (Istio ambient-compatible mesh) command line",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(out)
	root.SetErr(errOut)
	k.register(root)
	root.AddCommand(newWaypointCommand(k), newZtunnelConfigCommand(k))
	return root
}
