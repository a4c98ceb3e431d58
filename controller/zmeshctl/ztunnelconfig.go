package zmeshctl

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// ztunnelConfigOptions select the ztunnel whose configuration is read.
type ztunnelConfigOptions struct {
	adminAddr        string
	node             string
	ztunnelNamespace string
	output           string
	timeout          time.Duration
}

func newZtunnelConfigCommand(k *kubeFlags) *cobra.Command {
	o := &ztunnelConfigOptions{}
	c := &cobra.Command{
		Use:   "ztunnel-config",
		Short: "Show a ztunnel's workloads, services, policies and certificates",
		Long: `Reads a ztunnel's admin endpoint (/config_dump on port 15000) and prints one part of it.
The ztunnel is --admin-addr when given; otherwise the pod named by POD (name or name.namespace),
the ztunnel on --node, or any ztunnel (label app=ztunnel in --ztunnel-namespace), reached by
port-forwarding through the API server.`,
	}
	pf := c.PersistentFlags()
	pf.StringVar(&o.adminAddr, "admin-addr", "", "a ztunnel admin address host:port to read directly (no port-forward)")
	pf.StringVar(&o.node, "node", "", "read the ztunnel on this node")
	pf.StringVar(&o.ztunnelNamespace, "ztunnel-namespace", "istio-system", "namespace of the ztunnel pods")
	pf.StringVarP(&o.output, "output", "o", "table", "output format: table, json or yaml")
	pf.DurationVar(&o.timeout, "timeout", 30*time.Second, "how long to wait for the ztunnel")
	for _, s := range []struct {
		section string
		aliases []string
	}{
		{sectionWorkloads, []string{"workload", "w"}},
		{sectionServices, []string{"service", "svc", "s"}},
		{sectionPolicies, []string{"policy", "p"}},
		{sectionCertificates, []string{"certificate", "certs", "secret", "secrets"}},
	} {
		c.AddCommand(&cobra.Command{
			Use:     s.section + " [POD]",
			Aliases: s.aliases,
			Short:   "Show the ztunnel's " + s.section,
			Args:    cobra.MaximumNArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				pod := ""
				if len(args) == 1 {
					pod = args[0]
				}
				return runZtunnelConfig(cmd.Context(), k, o, pod, s.section, cmd.OutOrStdout())
			},
		})
	}
	return c
}

func runZtunnelConfig(ctx context.Context, k *kubeFlags, o *ztunnelConfigOptions, pod, section string, out io.Writer) error {
	switch o.output {
	case "table", "json", "yaml":
	default:
		return fmt.Errorf("--output must be table, json or yaml, not %q", o.output)
	}
	if o.adminAddr != "" && (pod != "" || o.node != "") {
		return fmt.Errorf("give either --admin-addr or a ztunnel pod / --node, not both")
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	addr := o.adminAddr
	var fw *adminForward
	if addr == "" {
		c, err := k.clients()
		if err != nil {
			return err
		}
		target, err := findZtunnel(ctx, c, o.ztunnelNamespace, pod, o.node)
		if err != nil {
			return err
		}
		fw, err = forwardAdmin(ctx, c, target)
		if err != nil {
			return err
		}
		defer fw.Close()
		addr = fw.Addr()
	}
	body, err := fetchConfigDump(ctx, addr)
	if err != nil && fw != nil {
		if msg := fw.Errors(); msg != "" {
			return fmt.Errorf("%w (port-forward: %s)", err, msg)
		}
	}
	if err != nil {
		return err
	}
	d, err := parseConfigDump(body)
	if err != nil {
		return err
	}
	return render(d, section, o.output, out)
}

// maxDumpBytes bounds what is read from a ztunnel.
const maxDumpBytes = 256 << 20

// fetchConfigDump GETs http://addr/config_dump.
func fetchConfigDump(ctx context.Context, addr string) ([]byte, error) {
	url := "http://" + addr + "/config_dump"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("ztunnel admin address %q: %w", addr, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot read the ztunnel's config dump at %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDumpBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", url, err)
	}
	if len(body) > maxDumpBytes {
		return nil, fmt.Errorf("config dump at %s is larger than %d bytes", url, maxDumpBytes)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s answered %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}
