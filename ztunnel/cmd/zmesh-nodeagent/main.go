// Command zmesh-nodeagent runs ztunnel's node agent: it decides which pods
// on its node are in the ambient mesh, redirects their traffic and hands
// them to ztunnel. See ztunnel/nodeagent.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/zmesh/zmesh/pkg/log"
	"github.com/zmesh/zmesh/ztunnel/nodeagent"
)

func main() {
	var cfg nodeagent.DaemonConfig
	var logLevel string
	flag.StringVar(&cfg.NodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name")
	flag.StringVar(&cfg.ConfigDir, "config-dir", "", "the controller's manifest directory (local mode pod source)")
	flag.StringVar(&cfg.ZDSSocket, "zds-socket", "/var/run/ztunnel/ztunnel.sock", "ZDS socket ztunnel connects to")
	flag.StringVar(&cfg.CNISocket, "cni-socket", "/var/run/ztunnel/cni.sock", "socket the CNI plugin calls")
	flag.StringVar(&cfg.ReadyAddr, "ready-addr", nodeagent.DefaultReadyAddr, "readiness address (/healthz/ready)")
	flag.BoolVar(&cfg.DNSCapture, "dns-capture", false, "also redirect pods' DNS to ztunnel")
	flag.BoolVar(&cfg.IPv6, "ipv6", false, "also install IPv6 redirection")
	flag.DurationVar(&cfg.PodWait, "pod-wait", 0, "how long a CNI ADD waits for the pod source (0 = 10s)")
	flag.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	flag.Parse()

	logger, err := log.New(os.Stderr, logLevel)
	if err != nil {
		fmt.Fprintln(os.Stderr, "zmesh-nodeagent:", err)
		os.Exit(2)
	}
	cfg.Logger = logger
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := nodeagent.Run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "zmesh-nodeagent:", err)
		os.Exit(1)
	}
}
