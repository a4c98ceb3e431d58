// Command waypoint runs zmesh's L7 proxy for ambient mode. See waypoint/app.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/zmesh/zmesh/pkg/log"
	"github.com/zmesh/zmesh/pkg/runtimeflags"
	"github.com/zmesh/zmesh/waypoint/app"
)

func main() {
	var cfg app.Config
	var logLevel string
	var rt runtimeflags.Flags
	var accessLogFile string
	flag.StringVar(&cfg.ControllerAddr, "controller", "istiod.istio-system.svc:15012", "controller gRPC address (xDS and CA)")
	flag.StringVar(&cfg.ControllerName, "controller-name", "istiod.istio-system.svc", "DNS name in the controller's certificate")
	flag.StringVar(&cfg.RootCertFile, "root-cert", "/var/run/secrets/istio/root-cert.pem", "mesh root certificate (PEM)")
	flag.StringVar(&cfg.TokenFile, "token-file", "/var/run/secrets/tokens/istio-token", "service-account token for the controller")
	flag.StringVar(&cfg.PodName, "pod-name", os.Getenv("POD_NAME"), "this waypoint's pod name")
	flag.StringVar(&cfg.PodNamespace, "pod-namespace", os.Getenv("POD_NAMESPACE"), "this waypoint's namespace")
	flag.StringVar(&cfg.ServiceAccount, "service-account", os.Getenv("SERVICE_ACCOUNT"), "this waypoint's service account")
	flag.StringVar(&cfg.NodeName, "node-name", os.Getenv("NODE_NAME"), "the node the waypoint runs on")
	flag.StringVar(&cfg.InstanceIP, "instance-ip", os.Getenv("INSTANCE_IP"), "this waypoint's IP")
	flag.StringVar(&cfg.TrustDomain, "trust-domain", "cluster.local", "mesh trust domain")
	flag.StringVar(&cfg.ClusterID, "cluster-id", "Kubernetes", "cluster id")
	flag.StringVar(&cfg.AdminAddr, "admin-addr", "127.0.0.1:15000", "admin address")
	flag.StringVar(&cfg.MetricsAddr, "metrics-addr", ":15020", "metrics address")
	flag.StringVar(&cfg.ReadyAddr, "ready-addr", ":15021", "readiness address")
	flag.StringVar(&cfg.HBONEAddr, "hbone-addr", ":15008", "HBONE listen address")
	flag.StringVar(&cfg.OTLPEndpoint, "otlp-endpoint", "", "OTLP/HTTP traces endpoint, e.g. http://collector:4318/v1/traces (empty: no export)")
	flag.Float64Var(&cfg.TraceSamplingPercent, "trace-sampling", 1, "percent of new traces sampled")
	flag.StringVar(&accessLogFile, "access-log-file", "", "file to append every request's JSON access log line to, e.g. /dev/stdout (Istio's meshConfig.accessLogFile; empty: only the listeners whose configuration asks for it, from Telemetry resources, are logged, to stdout)")
	flag.DurationVar(&cfg.AccessLogFlushInterval, "access-log-flush-interval", time.Second, "buffer access log lines and write them at this interval (0: write each line at once)")
	flag.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	rt.Register(flag.CommandLine, "waypoint")
	flag.Parse()

	logger, err := log.New(os.Stderr, logLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "waypoint:", err)
		os.Exit(2)
	}
	stopRuntime, err := rt.Apply(logger)
	if err != nil {
		fmt.Fprintln(os.Stderr, "waypoint:", err)
		os.Exit(2)
	}
	defer stopRuntime()
	cfg.Logger = logger
	accessLog, closeAccessLog, err := openAccessLog(accessLogFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "waypoint:", err)
		os.Exit(2)
	}
	defer closeAccessLog()
	cfg.AccessLog = accessLog
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.Run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "waypoint:", err)
		os.Exit(1)
	}
}

// openAccessLog opens where access log lines go: nothing for an empty
// path, the process's own stdout or stderr for /dev/stdout and /dev/stderr,
// else the file, appended to (created 0644 if missing). The returned
// function closes what was opened.
func openAccessLog(path string) (io.Writer, func(), error) {
	switch path {
	case "":
		return nil, func() {}, nil
	case "/dev/stdout":
		return os.Stdout, func() {}, nil
	case "/dev/stderr":
		return os.Stderr, func() {}, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("access log: %w", err)
	}
	return f, func() { _ = f.Close() }, nil
}
