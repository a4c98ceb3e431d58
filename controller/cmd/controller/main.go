// Command controller runs the zmesh controller: the workload API over delta
// xDS, the mesh CA, and on Kubernetes the waypoint deployer and status
// writers. See controller/app.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/zmesh/zmesh/pkg/log"

	"github.com/zmesh/zmesh/controller/app"
	"github.com/zmesh/zmesh/controller/ca"
)

func main() {
	var cfg app.Config
	var nodeIDs, names, selectors, logLevel string
	flag.StringVar(&cfg.ConfigDir, "config-dir", "", "directory of Kubernetes-style YAML manifests to serve (local mode; without it the controller reads the Kubernetes API)")
	flag.StringVar(&cfg.Kube.Kubeconfig, "kubeconfig", "", "kubeconfig file (default $KUBECONFIG, then in-cluster)")
	flag.StringVar(&cfg.Kube.SystemNamespace, "system-namespace", "", "namespace of the CA Secrets and the leader-election Lease (default $POD_NAMESPACE, else istio-system)")
	flag.StringVar(&selectors, "discovery-selectors", "", `Istio discoverySelectors: label selectors separated by ";" (e.g. "istio-discovery=enabled;team in (a,b)"); only matching namespaces are served`)
	flag.StringVar(&cfg.Kube.WaypointImage, "waypoint-image", "", "image of the waypoint Deployments the controller creates")
	flag.StringVar(&cfg.Kube.ControllerAddress, "waypoint-controller-address", "", "controller address waypoints dial (default istiod.<system-namespace>.svc:15012)")
	flag.StringVar(&cfg.Kube.WaypointOTLPEndpoint, "waypoint-otlp-endpoint", "", "OTLP/HTTP traces endpoint deployed waypoints export spans to, e.g. http://collector.observability:4318/v1/traces (empty: no export)")
	flag.StringVar(&cfg.Kube.WaypointAccessLogFile, "waypoint-access-log-file", "", "file in the container deployed waypoints append JSON access log lines to, e.g. /dev/stdout (Istio's meshConfig.accessLogFile; empty: no access log)")
	flag.Float64Var(&cfg.Kube.WaypointTraceSampling, "waypoint-trace-sampling", 0, "percent of new traces deployed waypoints sample (0: the waypoint's default)")
	flag.StringVar(&cfg.GRPCAddr, "grpc-addr", ":15012", "address for xDS and the CA (TLS)")
	flag.StringVar(&cfg.MonitoringAddr, "monitoring-addr", ":15014", `address for /metrics, /healthz/ready and /debug/config_dump (loopback callers only) ("-" disables)`)
	flag.StringVar(&cfg.CADir, "ca-dir", "", "directory of the CA's root (created if empty) or a plugged-in CA")
	flag.DurationVar(&cfg.CAReloadInterval, "ca-reload-interval", ca.DefaultReloadInterval, "how often a plugged-in CA (--ca-dir files or the cacerts Secret) is read again for a new version")
	flag.StringVar(&cfg.TokensFile, "tokens-file", "", `static bearer tokens, one "<token> <spiffe-id> [node]" per line`)
	flag.StringVar(&nodeIDs, "node-identities", "", "comma-separated SPIFFE IDs allowed to request certificates for pods on their node (default: the ztunnel service account)")
	flag.StringVar(&names, "serving-names", "", "comma-separated DNS names and IPs for the controller's serving certificate")
	flag.StringVar(&cfg.Index.TrustDomain, "trust-domain", "cluster.local", "mesh trust domain")
	flag.StringVar(&cfg.Index.ClusterID, "cluster-id", "Kubernetes", "cluster id")
	flag.StringVar(&cfg.Index.RootNamespace, "root-namespace", "istio-system", "namespace of mesh-wide policy")
	flag.StringVar(&cfg.Index.DomainSuffix, "domain-suffix", "cluster.local", "service DNS domain suffix")
	flag.StringVar(&cfg.Index.Network, "network", "", "network of this cluster's pods")
	flag.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	flag.Parse()

	logger, err := log.New(os.Stderr, logLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "controller:", err)
		os.Exit(2)
	}
	cfg.Logger = logger
	cfg.NodeIdentities = splitList(nodeIDs)
	cfg.ServingNames = splitList(names)
	for _, s := range strings.Split(selectors, ";") {
		if s = strings.TrimSpace(s); s != "" {
			cfg.Kube.DiscoverySelectors = append(cfg.Kube.DiscoverySelectors, s)
		}
	}
	// Local mode has no node agent able to annotate pods: enrolment implies
	// capture. On Kubernetes the node agent's annotation says so.
	cfg.Index.AssumeCaptured = cfg.ConfigDir != ""

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.Run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "controller:", err)
		os.Exit(1)
	}
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
