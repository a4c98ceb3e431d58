package app

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/zmesh/zmesh/controller/index"
	"github.com/zmesh/zmesh/pkg/kube"
)

// Config is everything the controller needs to run.
type Config struct {
	// ConfigDir is the directory of manifests served in local mode. Without
	// it the controller runs on Kubernetes (see Kube).
	ConfigDir string
	// Kube configures the Kubernetes mode.
	Kube KubeConfig
	// GRPCAddr serves xDS and the CA (default ":15012").
	GRPCAddr string
	// MonitoringAddr serves /metrics, /healthz/ready and, to loopback
	// callers only, /debug/config_dump (default ":15014"; "-" disables it).
	MonitoringAddr string
	// CADir holds the CA's root (created on first start) or a plugged-in CA
	// in local mode. On Kubernetes the root lives in Secrets instead.
	CADir string
	// CAReloadInterval is how often a plugged-in CA (files in CADir, or
	// the cacerts Secret) is read again for a new version; zero means
	// ca.DefaultReloadInterval.
	CAReloadInterval time.Duration
	// TokensFile lists static bearer tokens: "<token> <spiffe-id> [node]".
	// Optional; callers can also authenticate with a mesh client certificate.
	TokensFile string
	// NodeIdentities may request certificates for pods on their node.
	// Default spiffe://<trust-domain>/ns/istio-system/sa/ztunnel.
	NodeIdentities []string
	// ServingNames are the DNS names and IPs in the controller's serving
	// certificate (default: istiod.istio-system.svc, localhost, 127.0.0.1...).
	ServingNames []string
	// Index shapes the resources (trust domain, cluster id, ...).
	Index index.Config
	// DebounceQuiet and DebounceMax bound how long xDS pushes wait to
	// coalesce bursts of changes. Sources coalesce their events before the
	// index is rebuilt (that is where a burst costs), so by default the xDS
	// server only merges what arrives within a millisecond.
	DebounceQuiet, DebounceMax time.Duration
	Logger                     *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	if c.ConfigDir != "" && c.CADir == "" {
		return c, errors.New("local mode (a config directory) needs a CA directory")
	}
	if c.ConfigDir == "" {
		var err error
		if c.Kube, err = c.Kube.withDefaults(); err != nil {
			return c, err
		}
	}
	if c.GRPCAddr == "" {
		c.GRPCAddr = ":15012"
	}
	if c.MonitoringAddr == "" {
		c.MonitoringAddr = ":15014"
	}
	if c.DebounceQuiet == 0 {
		c.DebounceQuiet = time.Millisecond
	}
	if c.DebounceMax == 0 {
		c.DebounceMax = 100 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Index.TrustDomain == "" {
		c.Index.TrustDomain = "cluster.local"
	}
	return c, nil
}

// KubeConfig is the Kubernetes mode's configuration.
type KubeConfig struct {
	// Kubeconfig is the client configuration file; empty uses $KUBECONFIG,
	// then the in-cluster service account.
	Kubeconfig string
	// Clients, when set, are used instead of loading Kubeconfig (tests).
	Clients *kube.Clients
	// SystemNamespace holds the CA's Secrets and the leader-election Lease
	// (default $POD_NAMESPACE, else istio-system).
	SystemNamespace string
	// Identity names this replica in leader election (default $POD_NAME,
	// else the host name).
	Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod tune leader election
	// (client-go defaults 15s, 10s, 2s; tests shorten them).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// WaypointImage is the image of the waypoint Deployments the controller
	// creates. Required on Kubernetes.
	WaypointImage string
	// ControllerAddress is what waypoints dial for xDS and certificates
	// (default istiod.<SystemNamespace>.svc:15012).
	ControllerAddress string
	// WaypointOTLPEndpoint, when set, makes every waypoint export a span
	// per sampled request to this OTLP/HTTP traces endpoint, sampling
	// WaypointTraceSampling percent of new traces (0: the waypoint's
	// default).
	WaypointOTLPEndpoint  string
	WaypointTraceSampling float64
	// WaypointAccessLogFile, when set, makes every waypoint append a JSON
	// access log line per request to this path in its container, as
	// Istio's meshConfig.accessLogFile does (typically /dev/stdout).
	// Empty, Istio's default, leaves access logs off.
	WaypointAccessLogFile string
	// DiscoverySelectors are Istio's discoverySelectors, in label-selector
	// syntax ("istio-discovery=enabled", "team in (a,b)"): when set, only
	// namespaces matching at least one are served, get waypoints and get
	// status. Empty selects every namespace.
	DiscoverySelectors []string
	// Disable switches off writers, for tests that run several controllers
	// against one API server: "waypoints", "rootcm", "status".
	Disable []string
}

func (k KubeConfig) withDefaults() (KubeConfig, error) {
	if k.SystemNamespace == "" {
		k.SystemNamespace = os.Getenv("POD_NAMESPACE")
	}
	if k.SystemNamespace == "" {
		k.SystemNamespace = "istio-system"
	}
	if k.Identity == "" {
		k.Identity = os.Getenv("POD_NAME")
	}
	if k.Identity == "" {
		h, err := os.Hostname()
		if err != nil {
			return k, fmt.Errorf("leader-election identity: %w", err)
		}
		k.Identity = h
	}
	if k.WaypointImage == "" && !slices.Contains(k.Disable, "waypoints") {
		return k, errors.New("on Kubernetes a waypoint image is required")
	}
	if k.ControllerAddress == "" {
		k.ControllerAddress = "istiod." + k.SystemNamespace + ".svc:15012"
	}
	if k.WaypointTraceSampling < 0 || k.WaypointTraceSampling > 100 {
		return k, fmt.Errorf("waypoint trace sampling %v%% is not within [0, 100]", k.WaypointTraceSampling)
	}
	if f := k.WaypointAccessLogFile; f != "" && (!path.IsAbs(f) || strings.ContainsFunc(f, unicode.IsControl)) {
		return k, fmt.Errorf("waypoint access log file %q is not an absolute path", f)
	}
	return k, nil
}
