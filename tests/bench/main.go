// Command bench measures zmesh's data plane on this machine: pod -> pod
// across two nodes, directly (pods outside the mesh) and through ztunnel
// on both nodes (ambient pods), with two ghostunnel hops as a comparison
// and two nginx stream mTLS hops (C, OpenSSL) as the reference for what
// any pair of L4 mTLS proxies adds here. It prints throughput (iperf3), HTTP latency (fortio), ztunnel CPU and
// memory, idle-connection memory and new-connection rate beside the
// issue's targets. It is a measurement: it exits 0 with the numbers, and
// non-zero only when the set-up fails.
//
// With -waypoint (the default) it also measures a Service bound to a
// waypoint against one without, what one plaintext nginx hop adds at the
// same load outside the mesh (the reference for the waypoint's added
// latency), and the waypoint's maximum request rate on one CPU against
// nginx's.
//
// Usage (as root, after `make build`): bench [-ztunnel bin/ztunnel] [-echo bin/echo] [-waypoint-bin bin/waypoint] [-waypoint-only] [-profile DIR]
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	cfg := DefaultConfig()
	flag.StringVar(&cfg.ZtunnelBin, "ztunnel", cfg.ZtunnelBin, "ztunnel binary, run as a process on each node")
	flag.StringVar(&cfg.EchoBin, "echo", cfg.EchoBin, "echo app binary, run in every pod")
	flag.StringVar(&cfg.ToolsDir, "tools", cfg.ToolsDir, "where fortio and ghostunnel are installed")
	flag.StringVar(&cfg.Prefix, "prefix", cfg.Prefix, "prefix of the bench cluster's namespaces (distinct per concurrent run)")
	flag.IntVar(&cfg.Rounds, "rounds", cfg.Rounds, "interleaved rounds of iperf3 and HTTP runs (the median is reported)")
	flag.DurationVar(&cfg.IperfDuration, "iperf-time", cfg.IperfDuration, "iperf3 run length")
	flag.DurationVar(&cfg.Load.Duration, "http-time", cfg.Load.Duration, "fortio run length")
	flag.IntVar(&cfg.Load.QPS, "qps", cfg.Load.QPS, "fortio request rate")
	flag.Float64Var(&cfg.Load.Resolution, "resolution", DefaultResolution, "fortio's histogram resolution -r, in seconds (its buckets are 1 to 2.5 ms wide between 1 and 10 ms at the default; 0.00001 makes them 0.2 to 1 ms)")
	flag.BoolVar(&cfg.Load.Uniform, "uniform", cfg.Load.Uniform, "spread each connection's requests over the period (fortio -uniform) instead of fortio's lockstep bursts")
	flag.IntVar(&cfg.IdleConns, "idle-conns", cfg.IdleConns, "idle connections held through each proxied path")
	flag.BoolVar(&cfg.Ghostunnel, "ghostunnel", cfg.Ghostunnel, "add the two-ghostunnel-hops comparison (built once when missing)")
	flag.BoolVar(&cfg.NginxTLS, "nginx-tls", cfg.NginxTLS, "add the reference of two nginx stream mTLS hops (C, OpenSSL; Debian's nginx installed when missing)")
	flag.BoolVar(&cfg.Waypoint, "waypoint", cfg.Waypoint, "add the waypoint scenario (ztunnel -> waypoint -> ztunnel vs ztunnel only, and one-core max req/s vs nginx)")
	flag.BoolVar(&cfg.WaypointOnly, "waypoint-only", cfg.WaypointOnly, "run only the waypoint scenario (no iperf3, ztunnel-only or ghostunnel measurements)")
	flag.StringVar(&cfg.WaypointBin, "waypoint-bin", cfg.WaypointBin, "waypoint binary (built when missing)")
	flag.Func("waypoint-arg", "an extra flag for the waypoint process, e.g. -waypoint-arg=--access-log-file=/dev/null (repeatable)", func(v string) error {
		cfg.WaypointArgs = append(cfg.WaypointArgs, v)
		return nil
	})
	flag.DurationVar(&cfg.MaxDuration, "max-time", cfg.MaxDuration, "length of the waypoint's and nginx's max req/s runs")
	flag.StringVar(&cfg.ProfileDir, "profile", "", "write CPU profiles of each ztunnel (and of the waypoint, with its allocations and a 2 s execution trace) during the proxied runs here")
	verbose := flag.Bool("v", false, "print the mesh components' logs")
	flag.Parse()
	if cfg.WaypointOnly {
		cfg.Waypoint = true
	}

	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	if *verbose {
		cfg.MeshLogger = cfg.Logger
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	res, err := Run(ctx, cfg)
	interrupted := ctx.Err() != nil
	stop()
	if err != nil {
		cfg.Logger.Error("bench set-up failed", "err", err)
		os.Exit(1)
	}
	printReport(os.Stdout, res)
	if interrupted {
		cfg.Logger.Error("bench interrupted; the numbers above are incomplete")
		os.Exit(1)
	}
}
