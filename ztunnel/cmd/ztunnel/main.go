// Command ztunnel runs zmesh's per-node L4 proxy. See ztunnel/app.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/zmesh/zmesh/pkg/log"
	"github.com/zmesh/zmesh/pkg/runtimeflags"

	"github.com/zmesh/zmesh/ztunnel/app"
)

func main() {
	var cfg app.Config
	var logLevel string
	var rt runtimeflags.Flags
	flag.StringVar(&cfg.ControllerAddr, "controller", "istiod.istio-system.svc:15012", "controller gRPC address (xDS and CA)")
	flag.StringVar(&cfg.ControllerName, "controller-name", "istiod.istio-system.svc", "DNS name in the controller's certificate")
	flag.StringVar(&cfg.RootCertFile, "root-cert", "/var/run/secrets/istio/root-cert.pem", "mesh root certificate (PEM)")
	flag.StringVar(&cfg.TokenFile, "token-file", "/var/run/secrets/tokens/istio-token", "bearer token for the controller")
	flag.StringVar(&cfg.NodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name")
	flag.StringVar(&cfg.NodeIP, "node-ip", os.Getenv("INSTANCE_IP"), "this ztunnel's IP")
	flag.StringVar(&cfg.PodName, "pod-name", os.Getenv("POD_NAME"), "this ztunnel's pod name")
	flag.StringVar(&cfg.PodNamespace, "pod-namespace", os.Getenv("POD_NAMESPACE"), "this ztunnel's namespace")
	flag.StringVar(&cfg.ClusterID, "cluster-id", "Kubernetes", "cluster id")
	flag.StringVar(&cfg.TrustDomain, "trust-domain", "cluster.local", "mesh trust domain")
	flag.StringVar(&cfg.Network, "network", "", "network of this node's pods")
	flag.StringVar(&cfg.ZDSSocket, "zds-socket", "/var/run/ztunnel/ztunnel.sock", "node agent socket")
	flag.StringVar(&cfg.AdminAddr, "admin-addr", "127.0.0.1:15000", "admin address")
	flag.StringVar(&cfg.MetricsAddr, "metrics-addr", ":15020", "metrics address")
	flag.StringVar(&cfg.ReadyAddr, "ready-addr", ":15021", "readiness address")
	flag.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	rt.Register(flag.CommandLine, "ztunnel")
	flag.Parse()

	logger, err := log.New(os.Stderr, logLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ztunnel:", err)
		os.Exit(2)
	}
	stopRuntime, err := rt.Apply(logger)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ztunnel:", err)
		os.Exit(2)
	}
	defer stopRuntime()
	cfg.Logger = logger
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.Run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "ztunnel:", err)
		os.Exit(1)
	}
}
