package waypoints

import (
	"errors"
	"log/slog"

	corev1 "k8s.io/api/core/v1"

	"github.com/zmesh/zmesh/pkg/kube"
)

// Names and values shared with Istio.
const (
	// GatewayClassName is the class of waypoint Gateways.
	GatewayClassName = "istio-waypoint"
	// ControllerName is the GatewayClass controllerName, Istio's value for
	// the mesh (waypoint) controller.
	ControllerName = "istio.io/mesh-controller"
	// FieldManager is the server-side apply field manager of everything
	// the Deployer writes.
	FieldManager = "zmesh-controller"

	// LabelGatewayName names the Gateway on deployed objects and pods; the
	// Service and Deployment select on it.
	LabelGatewayName = "gateway.networking.k8s.io/gateway-name"
	// LabelManaged marks deployed objects; ManagedValue marks a waypoint.
	LabelManaged = "gateway.istio.io/managed"
	ManagedValue = "istio.io-mesh-controller"
	// LabelDataplaneMode "none" keeps the waypoint's own pods out of
	// ztunnel capture.
	LabelDataplaneMode = "istio.io/dataplane-mode"
	// LabelWaypointFor on a Gateway says which traffic it serves.
	LabelWaypointFor = "istio.io/waypoint-for"

	// ListenerProtocolHBONE and HBONEPort are what a waypoint's one
	// listener must be.
	ListenerProtocolHBONE = "HBONE"
	HBONEPort             = 15008
	// StatusPort serves /healthz/ready; MetricsPort serves Prometheus.
	StatusPort  = 15021
	MetricsPort = 15020

	// Defaults.
	DefaultControllerAddress = "istiod.istio-system.svc:15012"
	DefaultControllerSAN     = "istiod.istio-system.svc"
	DefaultTrustDomain       = "cluster.local"
	DefaultClusterID         = "Kubernetes"
	DefaultDomainSuffix      = "cluster.local"

	// Where the waypoint finds its credentials.
	TokenAudience  = "istio-ca"
	TokenDir       = "/var/run/secrets/tokens"
	TokenFile      = "istio-token"
	RootCertDir    = "/var/run/secrets/istio"
	RootConfigMap  = "istio-ca-root-cert"
	ContainerName  = "istio-proxy"
	tokenExpirySec = 43200
)

// Options configures a Deployer.
type Options struct {
	// Clients reach the API server. Required.
	Clients *kube.Clients
	// Image of the waypoint binary. Required.
	Image string
	// ImagePullPolicy of the waypoint container; empty leaves the
	// Kubernetes default.
	ImagePullPolicy corev1.PullPolicy
	// ControllerAddress is the controller's xDS/CA address the waypoint
	// dials (--controller). Default DefaultControllerAddress.
	ControllerAddress string
	// ControllerSAN is the DNS name the waypoint requires in the
	// controller's certificate (--controller-name). Default DefaultControllerSAN.
	ControllerSAN string
	// TrustDomain and ClusterID are passed to the waypoint (TRUST_DOMAIN,
	// CLUSTER_ID). Defaults DefaultTrustDomain and DefaultClusterID.
	TrustDomain string
	ClusterID   string
	// DomainSuffix completes service hostnames in status messages.
	// Default DefaultDomainSuffix.
	DomainSuffix string
	// ExtraArgs are added to every waypoint's command line, e.g. its
	// tracing settings (--otlp-endpoint, --trace-sampling).
	ExtraArgs []string
	// Namespace limits the Deployer to one namespace; empty is all.
	Namespace string
	// Selects, when set, limits the Deployer further to Gateways in the
	// namespaces for which it returns true (the controller's discovery
	// selectors); Gateways elsewhere are left alone.
	Selects func(namespace string) bool
	// Workers is the number of Gateways reconciled in parallel. Default 2.
	Workers int
	// Logger receives the Deployer's logs. Default slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.ControllerAddress == "" {
		o.ControllerAddress = DefaultControllerAddress
	}
	if o.ControllerSAN == "" {
		o.ControllerSAN = DefaultControllerSAN
	}
	if o.TrustDomain == "" {
		o.TrustDomain = DefaultTrustDomain
	}
	if o.ClusterID == "" {
		o.ClusterID = DefaultClusterID
	}
	if o.DomainSuffix == "" {
		o.DomainSuffix = DefaultDomainSuffix
	}
	if o.Workers <= 0 {
		o.Workers = 2
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

func (o Options) validate() error {
	var errs []error
	if o.Clients == nil || o.Clients.Kube == nil || o.Clients.Gateway == nil {
		errs = append(errs, errors.New("waypoints: Clients (Kube and Gateway) are required"))
	}
	if o.Image == "" {
		errs = append(errs, errors.New("waypoints: Image is required"))
	}
	return errors.Join(errs...)
}
