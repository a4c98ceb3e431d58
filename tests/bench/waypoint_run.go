package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/zmesh/zmesh/tests/e2e/cluster"
)

// WaypointResult is the waypoint scenario's measurements.
type WaypointResult struct {
	// Via is through the waypoint (its Usage is the waypoint's);
	// NoWaypoint the same server through ztunnel only.
	Via, NoWaypoint *PathResult
	// ProxyCPU is the CPU the proxy was pinned to in the max-rate runs;
	// ClientCPUs where fortio ran ("" when unpinned).
	ProxyCPU   int
	ClientCPUs string
	// MaxWaypoint and MaxNginx are the fortio -qps 0 runs through the
	// pinned waypoint and the pinned nginx in its own pod (where the
	// waypoint sits: the verdict's comparison); MaxNginxLocal through an
	// nginx inside the server pod, upstream over loopback (for reference).
	MaxWaypoint, MaxNginx, MaxNginxLocal MaxRate
	// The rounds each of those is the median of (by requests per
	// CPU-second).
	MaxWaypointRounds, MaxNginxRounds, MaxNginxLocalRounds []MaxRate
	// ViaNginx and NoNginx are the reference for the added latency: the
	// same load from the non-mesh client pod through the nginx pod
	// (unpinned, as the waypoint is in Via) and straight to the non-mesh
	// server, in interleaved rounds. Nil when nginx could not run.
	ViaNginx, NoNginx *PathResult
	// ViaNginxMTLS and NoNginxMTLS are the same reference in C with the
	// waypoint's legs: an L7 nginx with mTLS on both legs between two
	// nginx stream mTLS hops, and the two hops alone (nginxMTLSHopPaths).
	// Nil when they could not run; NginxMTLSErr says why.
	ViaNginxMTLS, NoNginxMTLS *PathResult
	NginxMTLSErr              error
}

// MaxRate is one unthrottled fortio run through a proxy pinned to one
// CPU.
type MaxRate struct {
	Latency Latency
	// Usage sums the proxy's processes (nginx: master and worker).
	Usage Usage
	Err   error
}

// PerCPUSecond is the requests served per CPU-second the proxy used.
func (r MaxRate) PerCPUSecond() float64 {
	if r.Usage.CPU <= 0 {
		return 0
	}
	return float64(r.Latency.Requests) / r.Usage.CPU.Seconds()
}

// measureWaypoint runs the waypoint scenario: interleaved rounds of the
// configured load through the waypoint and through ztunnel only, then the
// one-core maximum of the waypoint and of nginx.
func (b *bench) measureWaypoint(ctx context.Context, via, noWP *Path, wp Proc) {
	res := &WaypointResult{}
	b.res.Waypoint = res
	if b.prof != nil {
		b.prof.waypoint = adminEndpoint{addr: waypointAdminAddr, client: b.m.Pods[podWaypoint].Netns.HTTPClient(0)}
	}
	res.NoWaypoint, res.Via = b.interleaved(ctx, noWP, via)

	n := runtime.NumCPU()
	res.ProxyCPU = n - 1
	if n > 1 {
		res.ClientCPUs = "0"
		if n > 2 {
			res.ClientCPUs = "0-" + strconv.Itoa(n-2)
		}
	}
	load := LoadSpec{QPS: 0, Conns: b.cfg.Load.Conns, Duration: b.cfg.MaxDuration, BodyBytes: b.cfg.Load.BodyBytes, Pin: res.ClientCPUs}

	// The proxies' maxima run in interleaved rounds (waypoint, nginx,
	// nginx in the server pod), so that a slow moment of the shared
	// machine falls on all of them; the medians are compared.
	type target struct {
		name    string
		path    *Path
		procs   []Proc
		rounds  *[]MaxRate
		summary *MaxRate // the median round
	}
	var targets []target
	restore, err := pinThreads(wp.Pid, res.ProxyCPU)
	if err != nil {
		res.MaxWaypoint.Err = err
	} else {
		maxWP := *via
		maxWP.Name = "waypoint-max"
		targets = append(targets, target{"waypoint", &maxWP, []Proc{wp}, &res.MaxWaypointRounds, &res.MaxWaypoint})
	}
	nctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	bin, err := ensureNginx(nctx)
	cancel()
	if err != nil {
		res.MaxNginx.Err = err
	} else {
		server := b.m.Pods[podDirectServer]
		for _, run := range []struct {
			rounds   *[]MaxRate
			summary  *MaxRate
			pod      *cluster.Pod
			upstream string
		}{
			{&res.MaxNginxRounds, &res.MaxNginx, b.m.Pods[podNginx], hostPort(server.IP.String(), portFortio)},
			{&res.MaxNginxLocalRounds, &res.MaxNginxLocal, server, hostPort("127.0.0.1", portFortio)},
		} {
			procs, err := startNginx(ctx, b.m, bin, filepath.Join(b.work, "nginx-"+run.pod.Name), res.ProxyCPU, run.pod, run.upstream)
			if err != nil {
				run.summary.Err = err
				continue
			}
			p := &Path{Name: "nginx-max-" + run.pod.Name, Client: b.m.Pods[podDirectClient], HTTP: hostPort(run.pod.IP.String(), nginxPort)}
			targets = append(targets, target{p.Name, p, procs, run.rounds, run.summary})
		}
	}
	for round := range max(1, b.cfg.Rounds) {
		for _, tg := range targets {
			b.log.Info("fortio max rate on one CPU", "proxy", tg.name, "round", round+1, "cpu", res.ProxyCPU, "duration", load.Duration)
			var r MaxRate
			run := func() error { r = b.maxRate(ctx, tg.path, tg.procs, load); return nil }
			if tg.name == "waypoint" && round == 0 {
				_ = b.prof.duringWaypoint(ctx, "max", load.Duration, b.warn, run)
			} else {
				_ = run()
			}
			*tg.rounds = append(*tg.rounds, r)
		}
	}
	if restore != nil {
		if err := restore(); err != nil {
			b.warn(fmt.Errorf("waypoint affinity: %w", err))
		}
	}
	for _, tg := range targets {
		*tg.summary = medianRate(*tg.rounds)
		if tg.path.Name == nginxMaxPath {
			b.nginxHopRounds(ctx, res, tg.procs)
		}
	}
	b.nginxMTLSHopRounds(ctx, res)
}

// nginxMTLSHopRounds measures the reference in C for the waypoint's added
// latency: what an L7 nginx with mTLS on both legs adds between two nginx
// stream mTLS hops, at the same load, in interleaved rounds.
func (b *bench) nginxMTLSHopRounds(ctx context.Context, res *WaypointResult) {
	err := b.tools.NginxStreamErr
	if err == nil {
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		var via, base *Path
		via, base, err = nginxMTLSHopPaths(sctx, b.m, b.tools.NginxStream, filepath.Join(b.work, "nginx-mtls-hop"))
		cancel()
		if err == nil {
			res.NoNginxMTLS, res.ViaNginxMTLS = b.interleaved(ctx, base, via)
			return
		}
	}
	res.NginxMTLSErr = err
	b.warn(fmt.Errorf("nginx mTLS hop reference skipped: %w", err))
}

// nginxMaxPath names the max-rate path through the nginx pod.
const nginxMaxPath = "nginx-max-" + podNginx

// nginxHopRounds measures the reference for the waypoint's added latency:
// what one plaintext nginx hop adds at the same load on this machine. The
// nginx worker is unpinned first, as the waypoint is during its latency
// rounds.
func (b *bench) nginxHopRounds(ctx context.Context, res *WaypointResult, nginx []Proc) {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		b.warn(fmt.Errorf("nginx hop reference: %w", err))
		return
	}
	for _, p := range nginx {
		if err := setAll(p.Pid, &all, nil); err != nil {
			b.warn(fmt.Errorf("nginx hop reference: unpin nginx: %w", err))
			return
		}
	}
	client, server := b.m.Pods[podDirectClient], b.m.Pods[podDirectServer]
	direct := &Path{Name: pathNoNginx, Client: client, HTTP: hostPort(server.IP.String(), portFortio)}
	via := &Path{Name: pathViaNginx, Client: client, HTTP: hostPort(b.m.Pods[podNginx].IP.String(), nginxPort),
		Proxies: map[int][]Proc{portFortio: nginx}}
	res.NoNginx, res.ViaNginx = b.interleaved(ctx, direct, via)
}

// interleaved runs the HTTP load over base and via in alternating rounds,
// so both see the same moments of the shared machine, and returns their
// summarised results.
func (b *bench) interleaved(ctx context.Context, base, via *Path) (baseRes, viaRes *PathResult) {
	baseRes, viaRes = &PathResult{Name: base.Name}, &PathResult{Name: via.Name}
	for round := range max(1, b.cfg.Rounds) {
		b.httpRound(ctx, round, base, baseRes)
		b.httpRound(ctx, round, via, viaRes)
	}
	baseRes.summarise()
	viaRes.summarise()
	return baseRes, viaRes
}

// medianRate returns the round with the median requests per CPU-second,
// or one carrying the first error when no round succeeded.
func medianRate(rounds []MaxRate) MaxRate {
	var ok []MaxRate
	for _, r := range rounds {
		if r.Err == nil {
			ok = append(ok, r)
		}
	}
	switch {
	case len(ok) > 0:
		slices.SortFunc(ok, func(x, y MaxRate) int { return cmp.Compare(x.PerCPUSecond(), y.PerCPUSecond()) })
		return ok[len(ok)/2]
	case len(rounds) > 0:
		return MaxRate{Err: rounds[0].Err}
	}
	return MaxRate{Err: errors.New("no round ran")}
}

// maxRate runs one fortio load over p with procs' usage summed.
func (b *bench) maxRate(ctx context.Context, p *Path, procs []Proc, load LoadSpec) MaxRate {
	var r MaxRate
	um, err := startUsage(procs)
	if err != nil {
		r.Err = err
		return r
	}
	r.Latency, r.Err = runFortio(ctx, b.m.Cluster, b.tools.Fortio, b.work, p, load)
	us, err := um.stop(r.Latency.Requests)
	if err != nil {
		if r.Err == nil {
			r.Err = err
		}
		return r
	}
	for i, u := range us {
		if i == 0 {
			r.Usage = u
			r.Usage.Name = p.Name
			continue
		}
		r.Usage.CPU += u.CPU
		r.Usage.PeakRSSKB += u.PeakRSSKB
	}
	return r
}

// setupWaypoint prepares the scenario once the mesh runs; a failure drops
// the scenario with a warning.
func (b *bench) setupWaypoint(ctx context.Context) (via, noWP *Path, wp Proc, ok bool) {
	via, noWP, wp, err := waypointPaths(ctx, b.m)
	if err != nil {
		b.warn(fmt.Errorf("waypoint scenario skipped: %w", err))
		return nil, nil, Proc{}, false
	}
	return via, noWP, wp, true
}
