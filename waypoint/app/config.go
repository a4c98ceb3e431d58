package app

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"time"

	"google.golang.org/grpc"

	"github.com/zmesh/zmesh/pkg/caclient"
	"github.com/zmesh/zmesh/pkg/mtls"
)

// Config is everything the waypoint needs to run.
type Config struct {
	// ControllerAddr is the controller's gRPC address (xDS and CA). Required.
	ControllerAddr string
	// ControllerName is the DNS name its certificate must carry
	// (default istiod.istio-system.svc).
	ControllerName string
	// RootCertFile holds the mesh root certificate(s) (PEM). Required.
	RootCertFile string
	// TokenFile holds the service-account token presented to the
	// controller for xDS and for the waypoint's own certificate. Required.
	TokenFile string
	// PodName, PodNamespace, ServiceAccount, NodeName and InstanceIP
	// describe this waypoint; the namespace and service account make its
	// identity. PodNamespace and ServiceAccount are required.
	PodName, PodNamespace, ServiceAccount, NodeName, InstanceIP string
	// TrustDomain of the mesh (default "cluster.local").
	TrustDomain string
	// ClusterID is sent to the controller (default "Kubernetes").
	ClusterID string
	// AdminAddr serves /config_dump and pprof (default 127.0.0.1:15000).
	AdminAddr string
	// MetricsAddr serves /metrics (default :15020).
	MetricsAddr string
	// ReadyAddr serves /healthz/ready (default :15021).
	ReadyAddr string
	// HBONEAddr is where tunnels are terminated (default :15008).
	HBONEAddr string
	// AccessLog receives the JSON access log lines of every request and
	// connection (the mesh's access log file); nil leaves logging to the
	// listeners' configuration (Telemetry resources), which logs to Stdout
	// or Stderr.
	AccessLog io.Writer
	// Stdout and Stderr receive the access log lines of listeners that log
	// to /dev/stdout and /dev/stderr. Default: the process's own.
	Stdout, Stderr io.Writer
	// AccessLogFlushInterval, when positive, buffers access log lines and
	// writes them at this interval (or once 64 KiB are pending), as Envoy
	// does; zero writes each line as its request ends.
	AccessLogFlushInterval time.Duration
	// OTLPEndpoint, when set, receives sampled spans over OTLP/HTTP (JSON),
	// e.g. http://collector:4318/v1/traces.
	OTLPEndpoint string
	// TraceSamplingPercent is the share of traces this waypoint starts that
	// are sampled (a caller's decision is always kept); 0 samples none.
	TraceSamplingPercent float64
	Logger               *slog.Logger

	// Test hooks. ControllerDialOptions replace the TLS credentials built
	// from RootCertFile; Fetcher replaces the CA client; DialUpstream
	// replaces the TCP dial to an endpoint's HBONE port (ip:15008).
	ControllerDialOptions []grpc.DialOption
	Fetcher               Fetcher
	DialUpstream          func(ctx context.Context, nextHop netip.AddrPort) (net.Conn, error)
}

// Fetcher obtains certificates from the CA; *caclient.Client is one.
type Fetcher interface {
	Fetch(ctx context.Context, req caclient.Request) (*mtls.Certificate, error)
}

func (c Config) withDefaults() (Config, error) {
	switch {
	case c.ControllerAddr == "":
		return c, errors.New("the controller address is required")
	case c.RootCertFile == "":
		return c, errors.New("the mesh root certificate file is required")
	case c.TokenFile == "" && c.Fetcher == nil:
		return c, errors.New("a token file is required")
	case c.PodNamespace == "":
		return c, errors.New("the pod namespace is required")
	case c.ServiceAccount == "":
		return c, errors.New("the service account is required")
	}
	def := func(v *string, d string) {
		if *v == "" {
			*v = d
		}
	}
	def(&c.ControllerName, caclient.DefaultServerName)
	def(&c.ClusterID, "Kubernetes")
	def(&c.TrustDomain, "cluster.local")
	def(&c.AdminAddr, "127.0.0.1:15000")
	def(&c.MetricsAddr, ":15020")
	def(&c.ReadyAddr, ":15021")
	def(&c.HBONEAddr, ":15008")
	if c.TraceSamplingPercent < 0 || c.TraceSamplingPercent > 100 {
		return c, errors.New("trace sampling percent must be within [0, 100]")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Stdout == nil {
		c.Stdout = os.Stdout
	}
	if c.Stderr == nil {
		c.Stderr = os.Stderr
	}
	return c, nil
}
