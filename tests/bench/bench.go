package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/zmesh/zmesh/tests/e2e/meshenv"
)

// PathResult is everything measured over one path. A measurement that
// failed leaves its error and a zero value.
type PathResult struct {
	Name string

	// Throughput is the median round; ThroughputErr the first failed
	// round's error (a measurement with no successful round is empty).
	Throughput       Throughput
	ThroughputErr    error
	ThroughputRounds []Throughput
	// IperfUsage is the path's proxies' CPU during the iperf3 runs.
	IperfUsage []Usage

	// Latency has each percentile's median over the rounds.
	Latency       Latency
	LatencyErr    error
	LatencyRounds []Latency
	// Usage is the path's proxies' CPU and peak memory during the HTTP
	// runs.
	Usage    []Usage
	UsageErr error

	ConnRate    ConnRate
	ConnRateErr error

	// Ping is the path's 1-byte round trips with the path idle between
	// them (pingRTT): what waking its processes costs.
	Ping    Latency
	PingErr error

	// Idle is the proxies' RSS growth with idle connections (proxied
	// paths only).
	Idle    []IdleGrowth
	IdleErr error
}

// Results is one bench run.
type Results struct {
	Config  Config
	Tools   Tools
	Started time.Time
	LoadAvg string
	Elapsed time.Duration
	// Paths are direct, ztunnel and (when available) ghostunnel and
	// nginx-mtls, in that order.
	Paths []*PathResult
	// Waypoint is the waypoint scenario (nil when disabled or skipped).
	Waypoint *WaypointResult
	// Warnings are problems that did not stop the bench (profiling,
	// ghostunnel set-up...).
	Warnings []string
	// Noisy says what else ran on the machine when the bench started: not a
	// problem of the bench, but its latency tails carry it.
	Noisy []string
}

// Path returns the named path's results, or nil.
func (r *Results) Path(name string) *PathResult {
	for _, p := range r.Paths {
		if p.Name == name {
			return p
		}
	}
	return nil
}

func (r *Results) warn(log *slog.Logger, err error) {
	log.Warn(err.Error())
	r.Warnings = append(r.Warnings, err.Error())
}

// Run sets up the mesh, measures every path and tears everything down. It
// returns an error only when the set-up fails; failed measurements are
// recorded in the results.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.WaypointOnly {
		cfg.Waypoint = true
	}
	res := &Results{Config: cfg, Started: time.Now(), LoadAvg: loadAvg()}
	if os.Geteuid() != 0 {
		return res, errors.New("the bench builds network namespaces and needs root")
	}
	for _, b := range []*string{&cfg.ZtunnelBin, &cfg.EchoBin} {
		abs, err := filepath.Abs(*b)
		if err != nil {
			return res, fmt.Errorf("binary %s: %w", *b, err)
		}
		if !isExecutable(abs) {
			return res, fmt.Errorf("binary %s missing (run `make build`)", abs)
		}
		*b = abs
	}
	// nginx's stream module serves the nginx mTLS path and the waypoint
	// scenario's reference in C.
	tools, err := ensureTools(ctx, cfg.ToolsDir, cfg.Ghostunnel, cfg.Waypoint || cfg.NginxTLS && !cfg.WaypointOnly, log)
	res.Tools = tools
	if err != nil {
		return res, err
	}
	work, err := os.MkdirTemp("", "zmesh-bench-")
	if err != nil {
		return res, fmt.Errorf("work dir: %w", err)
	}
	defer os.RemoveAll(work)

	spec := meshSpec(cfg.Prefix, cfg.EchoBin, cfg.EchoEnv, cfg.ZtunnelBin, cfg.MeshLogger)
	if cfg.Waypoint {
		bin, err := waypointBinary(ctx, cfg.WaypointBin, work)
		if err != nil {
			return res, err
		}
		addWaypoint(&spec, bin, cfg.WaypointArgs)
	}
	// The latency tails measure the machine too: say when it is not quiet.
	noisy := func(msg string) {
		log.Warn(msg)
		res.Noisy = append(res.Noisy, msg)
	}
	if busy, err := machineBusy(ctx, time.Second); err != nil {
		res.warn(log, err)
	} else if busy > quietThreshold {
		noisy(fmt.Sprintf("the machine was %.0f%% busy in the second before the bench", busy*100))
	}
	if n := runningNeighbours(); len(n) > 0 {
		noisy(strings.Join(n, ", ") + " running (the test control plane left by `make test`? `make kube-down` stops it): idle, it still wakes every few milliseconds")
	}
	log.Info("starting the mesh", "ztunnel", cfg.ZtunnelBin)
	sctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	m, err := meshenv.Start(sctx, spec)
	cancel()
	if err != nil {
		return res, fmt.Errorf("mesh: %w", err)
	}
	defer func() {
		if err := m.Close(); err != nil {
			log.Warn("mesh teardown", "err", err)
		}
	}()
	paths, err := setupPaths(ctx, m, tools, work, res, log)
	if err != nil {
		if m.Cluster != nil && cfg.MeshLogger != nil {
			m.Cluster.DumpLogs(os.Stderr)
		}
		return res, err
	}
	b := &bench{cfg: cfg, tools: tools, m: m, work: work, res: res, log: log}
	if cfg.ProfileDir != "" {
		b.prof = &profiler{dir: cfg.ProfileDir, admins: map[string]string{}}
		if err := os.MkdirAll(cfg.ProfileDir, 0o755); err != nil {
			return res, fmt.Errorf("profile dir: %w", err)
		}
		for node, a := range m.ZtunnelHTTP {
			b.prof.admins["ztunnel-"+node] = a.Admin
		}
	}
	if !cfg.WaypointOnly {
		b.measure(ctx, paths)
	}
	if cfg.Waypoint {
		if via, noWP, wp, ok := b.setupWaypoint(ctx); ok {
			b.measureWaypoint(ctx, via, noWP, wp)
		}
	}
	res.Elapsed = time.Since(res.Started)
	return res, nil
}

// setupPaths starts the servers and the ghostunnel and nginx hops and
// checks that every path carries a connection. The direct and ztunnel
// paths are required; a broken comparison path is dropped with a warning.
func setupPaths(ctx context.Context, m *meshenv.Mesh, tools Tools, work string, res *Results, log *slog.Logger) ([]*Path, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for _, pod := range []string{podDirectServer, podMeshServer} {
		if err := startServers(ctx, m, tools, m.Pods[pod]); err != nil {
			return nil, err
		}
	}
	direct, mesh, err := directAndMeshPaths(m)
	if err != nil {
		return nil, err
	}
	paths := []*Path{direct, mesh}
	for _, p := range paths {
		if _, err := connRate(ctx, p, 1, 5, 20*time.Second); err != nil {
			return nil, fmt.Errorf("path check: %w", err)
		}
	}
	if err := checkMTLS(ctx, m); err != nil {
		return nil, fmt.Errorf("path check: %w", err)
	}
	if tools.Ghostunnel != "" && !res.Config.WaypointOnly {
		g, err := ghostunnelPath(ctx, m, tools.Ghostunnel, filepath.Join(work, "ghostunnel"))
		if err == nil {
			_, err = connRate(ctx, g, 1, 5, 20*time.Second)
		}
		if err != nil {
			res.warn(log, fmt.Errorf("ghostunnel comparison skipped: %w", err))
			res.Tools.GhostunnelErr = err
		} else {
			paths = append(paths, g)
		}
	}
	if tools.NginxStream != "" && res.Config.NginxTLS && !res.Config.WaypointOnly {
		n, err := nginxTLSPath(ctx, m, tools.NginxStream, filepath.Join(work, "nginx-mtls"))
		if err != nil {
			res.warn(log, fmt.Errorf("nginx mTLS reference skipped: %w", err))
			res.Tools.NginxStreamErr = err
		} else {
			paths = append(paths, n)
		}
	}
	for _, p := range paths {
		res.Paths = append(res.Paths, &PathResult{Name: p.Name})
	}
	return paths, nil
}

type bench struct {
	cfg   Config
	tools Tools
	m     *meshenv.Mesh
	work  string
	res   *Results
	log   *slog.Logger
	prof  *profiler
}

// measure runs each measurement over every path in turn, in interleaved
// rounds, so the baseline and the proxied paths see similar machine
// conditions; the report shows each round's median.
func (b *bench) measure(ctx context.Context, paths []*Path) {
	rounds := max(1, b.cfg.Rounds)
	for round := range rounds {
		for i, p := range paths {
			b.iperfRound(ctx, round, p, b.res.Paths[i])
		}
	}
	for round := range rounds {
		for i, p := range paths {
			b.httpRound(ctx, round, p, b.res.Paths[i])
		}
	}
	for i, p := range paths {
		r := b.res.Paths[i]
		b.log.Info("new connections per second", "path", p.Name, "max", b.cfg.ConnRateMax, "duration", b.cfg.ConnRateDuration)
		_ = b.prof.profileIf(ctx, p, "newconn", b.cfg.ConnRateDuration, b.warn, func() error {
			r.ConnRate, r.ConnRateErr = connRate(ctx, p, b.cfg.ConnRateWorkers, b.cfg.ConnRateMax, b.cfg.ConnRateDuration)
			return r.ConnRateErr
		})
	}
	for i, p := range paths {
		r := b.res.Paths[i]
		b.log.Info("1-byte round trips, path idle in between", "path", p.Name, "count", b.cfg.PingCount, "gap", pingGap)
		r.Ping, r.PingErr = pingRTT(ctx, p, b.cfg.PingCount, pingGap)
	}
	for i, p := range paths {
		if len(p.Proxies[portEcho]) == 0 {
			continue
		}
		r := b.res.Paths[i]
		b.log.Info("idle connections", "path", p.Name, "conns", b.cfg.IdleConns)
		var hold func()
		if b.prof != nil && p.Name == pathMesh {
			hold = func() { b.prof.snapshot(ctx, "idle", b.warn) }
		}
		r.Idle, r.IdleErr = idleConns(ctx, p, b.cfg.IdleConns, b.cfg.IdleSettle, hold)
	}
	for _, r := range b.res.Paths {
		r.summarise()
	}
}

func (b *bench) warn(err error) { b.res.warn(b.log, err) }

// iperfRound runs one iperf3 round over p, with its proxies' CPU measured
// (and the ztunnels profiled in the first round).
func (b *bench) iperfRound(ctx context.Context, round int, p *Path, r *PathResult) {
	b.log.Info("iperf3 single stream", "path", p.Name, "round", round+1, "duration", b.cfg.IperfDuration)
	um, err := startUsage(p.Proxies[portIperf])
	if err != nil {
		b.warn(err)
	}
	var t Throughput
	run := func() error {
		t, err = runIperf(ctx, b.m.Cluster, b.tools.Iperf3, p, b.cfg.IperfDuration)
		return nil
	}
	if round == 0 {
		_ = b.prof.profileIf(ctx, p, "iperf3", b.cfg.IperfDuration, b.warn, run)
	} else {
		_ = run()
	}
	if err != nil {
		r.ThroughputErr = cmp.Or(r.ThroughputErr, err)
		b.warn(fmt.Errorf("round %d: %w", round+1, err))
	} else {
		r.ThroughputRounds = append(r.ThroughputRounds, t)
	}
	if um != nil {
		u, err := um.stop(0)
		if err != nil {
			b.warn(err)
		}
		r.IperfUsage = addUsage(r.IperfUsage, u)
	}
}

// httpRound runs one fortio round over p, with its proxies' CPU and peak
// memory measured (and the ztunnels profiled in the first round).
func (b *bench) httpRound(ctx context.Context, round int, p *Path, r *PathResult) {
	b.log.Info("fortio HTTP load", "path", p.Name, "round", round+1, "qps", b.cfg.Load.QPS, "conns", b.cfg.Load.Conns, "duration", b.cfg.Load.Duration)
	um, err := startUsage(p.Proxies[portFortio])
	if err != nil {
		r.UsageErr = cmp.Or(r.UsageErr, err)
	}
	var l Latency
	run := func() error {
		l, err = runFortio(ctx, b.m.Cluster, b.tools.Fortio, b.work, p, b.cfg.Load)
		return nil
	}
	if round == 0 {
		_ = b.prof.profileIf(ctx, p, "http", b.cfg.Load.Duration, b.warn, run)
	} else {
		_ = run()
	}
	if err != nil {
		r.LatencyErr = cmp.Or(r.LatencyErr, err)
		b.warn(fmt.Errorf("round %d: %w", round+1, err))
	} else {
		r.LatencyRounds = append(r.LatencyRounds, l)
	}
	if um != nil {
		u, err := um.stop(l.Requests)
		if err != nil {
			r.UsageErr = cmp.Or(r.UsageErr, err)
		}
		r.Usage = addUsage(r.Usage, u)
	}
}

// profileIf profiles the ztunnels during fn when the path goes through
// them, and the waypoint when the path goes through it.
func (p *profiler) profileIf(ctx context.Context, path *Path, label string, d time.Duration, warn func(error), fn func() error) error {
	switch path.Name {
	case pathMesh:
		return p.during(ctx, label, d, warn, fn)
	case pathViaWaypoint:
		return p.duringWaypoint(ctx, label, d, warn, fn)
	}
	return fn()
}

// loadAvg returns /proc/loadavg's three load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
