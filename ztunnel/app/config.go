package app

import (
	"errors"
	"log/slog"
)

// Config is everything ztunnel needs to run.
type Config struct {
	// ControllerAddr is the controller's gRPC address (xDS and CA).
	ControllerAddr string
	// ControllerName is the DNS name its certificate must carry
	// (default istiod.istio-system.svc).
	ControllerName string
	// RootCertFile holds the mesh root certificate(s) (PEM). Required.
	RootCertFile string
	// TokenFile holds the bearer token presented to the controller. Required.
	TokenFile string
	// NodeName, NodeIP, PodName and PodNamespace describe this ztunnel.
	NodeName, NodeIP, PodName, PodNamespace string
	// ClusterID prefixes workload uids (default "Kubernetes").
	ClusterID string
	// TrustDomain of the mesh (default "cluster.local").
	TrustDomain string
	// Network of this node's pods ("" for the default network).
	Network string
	// ZDSSocket is the node agent's socket (default /var/run/ztunnel/ztunnel.sock).
	ZDSSocket string
	// AdminAddr serves /config_dump and pprof (default 127.0.0.1:15000).
	AdminAddr string
	// MetricsAddr serves /metrics (default :15020).
	MetricsAddr string
	// ReadyAddr serves /healthz/ready (default :15021).
	ReadyAddr string
	Logger    *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	switch {
	case c.ControllerAddr == "":
		return c, errors.New("the controller address is required")
	case c.RootCertFile == "":
		return c, errors.New("the mesh root certificate file is required")
	case c.TokenFile == "":
		return c, errors.New("a token file is required")
	case c.NodeName == "":
		return c, errors.New("the node name is required")
	}
	def := func(v *string, d string) {
		if *v == "" {
			*v = d
		}
	}
	def(&c.ControllerName, "istiod.istio-system.svc")
	def(&c.ClusterID, "Kubernetes")
	def(&c.TrustDomain, "cluster.local")
	def(&c.ZDSSocket, "/var/run/ztunnel/ztunnel.sock")
	def(&c.AdminAddr, "127.0.0.1:15000")
	def(&c.MetricsAddr, ":15020")
	def(&c.ReadyAddr, ":15021")
	def(&c.PodNamespace, "istio-system")
	def(&c.PodName, "ztunnel-"+c.NodeName)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}
