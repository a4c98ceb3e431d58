package main

import (
	"log/slog"
	"time"
)

// Config is one bench run.
type Config struct {
	// ZtunnelBin is the ztunnel binary (each node runs it as a process so
	// its CPU and memory can be read); EchoBin is the app run in every pod,
	// with EchoEnv added to its environment.
	ZtunnelBin, EchoBin string
	EchoEnv             []string
	// ToolsDir holds fortio and ghostunnel (installed when missing).
	ToolsDir string
	// Prefix names the cluster's namespaces.
	Prefix string

	// Rounds of iperf3 and HTTP runs, interleaved over the paths; the
	// report shows the median round.
	Rounds        int
	IperfDuration time.Duration
	Load          LoadSpec
	// New connections per second: Workers dialers, bounded by count and
	// time.
	ConnRateWorkers  int
	ConnRateMax      int64
	ConnRateDuration time.Duration
	// PingCount is how many idle 1-byte round trips each path gets
	// (pingRTT).
	PingCount int
	// IdleConns idle connections are held through each proxied path;
	// IdleSettle is the wait before each RSS reading.
	IdleConns  int
	IdleSettle time.Duration
	// Ghostunnel adds the two-ghostunnel-hops comparison path.
	Ghostunnel bool
	// NginxTLS adds the reference path of two nginx stream mTLS hops.
	NginxTLS bool
	// Waypoint adds the waypoint scenario: Load through a Service bound to
	// a waypoint (the WaypointBin process; built when it is not an
	// executable) against a Service without one, then MaxDuration of
	// unthrottled load through the waypoint and through nginx, each pinned
	// to one CPU.
	Waypoint    bool
	WaypointBin string
	// WaypointArgs are extra flags for the waypoint process, e.g.
	// --access-log-file=/dev/null to measure it with an access log.
	WaypointArgs []string
	// WaypointOnly skips the direct/ztunnel/ghostunnel measurements and
	// runs only the waypoint scenario (implies Waypoint).
	WaypointOnly bool
	MaxDuration  time.Duration
	// ProfileDir, when set, receives CPU profiles of each ztunnel during
	// the proxied iperf3 and HTTP runs, and of the waypoint during its
	// first HTTP round and its max-rate run.
	ProfileDir string
	// Logger prints progress; MeshLogger receives the mesh components'
	// logs (discarded when nil).
	Logger, MeshLogger *slog.Logger
}

// DefaultConfig is what `make bench` runs (about three and a half minutes
// once the tools are installed).
func DefaultConfig() Config {
	return Config{
		ZtunnelBin:       "bin/ztunnel",
		EchoBin:          "bin/echo",
		ToolsDir:         defaultToolsDir(),
		Prefix:           "zmbench",
		Rounds:           3,
		IperfDuration:    5 * time.Second,
		Load:             LoadSpec{QPS: 1000, Conns: 16, Duration: 8 * time.Second, BodyBytes: 1024},
		ConnRateWorkers:  4,
		ConnRateMax:      10000,
		ConnRateDuration: 3 * time.Second,
		PingCount:        1000,
		IdleConns:        1000,
		IdleSettle:       time.Second,
		Ghostunnel:       true,
		NginxTLS:         true,
		Waypoint:         true,
		WaypointBin:      "bin/waypoint",
		MaxDuration:      5 * time.Second,
	}
}
