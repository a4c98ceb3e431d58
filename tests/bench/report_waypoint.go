package main

import (
	"cmp"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// The targets for the waypoint (zmesh issue 5).
const (
	targetWaypointVCPUPer1k = 0.25
	targetWaypointAddedP99  = time.Millisecond
	targetWaypointRSSKB     = 60 * 1024
	targetVsNginx           = 0.5
)

// printWaypoint writes the waypoint scenario's tables.
func printWaypoint(w io.Writer, r *Results) {
	wr := r.Waypoint
	if wr == nil {
		return
	}
	cfg := r.Config
	via, base := wr.Via, wr.NoWaypoint
	fmt.Fprintf(w, "\nwaypoint: mesh-client -> ztunnel node1 -> waypoint (node2) -> ztunnel node2 -> mesh-server, against\n")
	fmt.Fprintf(w, "  ztunnel only (node1 -> node2), both to a Service VIP in front of the same server pod\n")
	if len(cfg.WaypointArgs) > 0 {
		fmt.Fprintf(w, "  the waypoint runs with the extra flags %s\n", strings.Join(cfg.WaypointArgs, " "))
	}
	t := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(t)
	fmt.Fprintln(t, "metric\tztunnel only\tvia waypoint\tadded\ttarget\tverdict")
	load := fmt.Sprintf("%d req/s, %d conns, %d B", cfg.Load.QPS, cfg.Load.Conns, cfg.Load.BodyBytes)
	lat := func(name string, get func(Latency) time.Duration, target string, check bool) {
		if via.LatencyErr != nil || base.LatencyErr != nil {
			fmt.Fprintf(t, "%s\terror (see below)\n", name)
			return
		}
		a, b := get(base.Latency), get(via.Latency)
		verdict := ""
		if check {
			verdict = verdictOf(b-a <= targetWaypointAddedP99)
		}
		fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\t%s\n", name, fmtDur(a), fmtDur(b), signedDur(b-a), target, verdict)
	}
	lat("HTTP p50 ("+load+")", func(l Latency) time.Duration { return l.P50 }, "", false)
	lat("HTTP p90", func(l Latency) time.Duration { return l.P90 }, "", false)
	lat("HTTP p99", func(l Latency) time.Duration { return l.P99 }, "added p99 <= 1 ms", true)
	if via.LatencyErr == nil && base.LatencyErr == nil {
		fmt.Fprintf(t, "HTTP achieved\t%.0f/s, %d err\t%.0f/s, %d err\t\t\t\n", base.Latency.QPS, base.Latency.Errors, via.Latency.QPS, via.Latency.Errors)
	}
	if via.UsageErr != nil || len(via.Usage) != 1 {
		fmt.Fprintf(t, "waypoint usage\terror (see below)\n")
	} else {
		u := via.Usage[0]
		fmt.Fprintf(t, "waypoint CPU\t\t%.2f s for %d req (%.3f busy vCPU)\t\t\t\n", u.CPU.Seconds(), u.Requests, u.Utilisation())
		fmt.Fprintf(t, "waypoint vCPU per 1000 req/s\t\t%.3f\t\t<= 0.25\t%s\n", u.VCPUPer1kRPS(), verdictOf(u.VCPUPer1kRPS() <= targetWaypointVCPUPer1k))
		peak := fmtKB(u.PeakRSSKB)
		if !u.PeakReset {
			peak += " (lifetime)"
		}
		fmt.Fprintf(t, "waypoint peak RSS (VmHWM)\t\t%s\t\t<= 60 MB\t%s\n", peak, verdictOf(u.PeakRSSKB <= targetWaypointRSSKB))
	}
	_ = t.Flush()
	run := cfg.Load.Duration.String()
	if cfg.Load.Requests > 0 {
		run = fmt.Sprintf("%d requests", cfg.Load.Requests)
	}
	fmt.Fprintf(w, "  (medians of %d interleaved rounds of fortio %s at -r %s; p99 µs per round: %s)\n",
		max(1, cfg.Rounds), run, cfg.Load.resolutionArg(), p99Rounds(base, via))
	fmt.Fprintf(w, "  (HTTP arrivals: %s)\n", arrivals(cfg.Load))
	fmt.Fprintf(w, "  (%s)\n", p99Buckets([]*PathResult{base, via}))
	printNginxHop(w, wr, wr.ViaNginx, wr.NoNginx, "nginx", run,
		"reference, outside the mesh: non-mesh client pod -> nginx pod (node2; plaintext HTTP/1.1, one worker, unpinned)\n"+
			"  -> non-mesh server pod, against the client straight to the server; same load, rounds interleaved likewise")
	if wr.NginxMTLSErr != nil {
		fmt.Fprintf(w, "\nreference in C with the waypoint's legs SKIPPED: %v\n", wr.NginxMTLSErr)
	}
	printNginxHop(w, wr, wr.ViaNginxMTLS, wr.NoNginxMTLS, "nginx L7", run,
		"reference in C with the waypoint's legs, outside the mesh: client pod -> nginx stream hop =mTLS=> nginx L7 in the nginx\n"+
			"  pod (node2; HTTP/1.1, one worker, unpinned) =mTLS=> nginx stream hop in the server pod -> server, against the two\n"+
			"  stream hops alone (as ztunnel -> waypoint -> ztunnel against ztunnel -> ztunnel); same load, rounds interleaved likewise")

	client := "unpinned"
	if wr.ClientCPUs != "" {
		client = "CPU " + wr.ClientCPUs
	}
	fmt.Fprintf(w, "\nmax req/s on one core: fortio -qps 0 -c %d, %d B bodies, %v; the proxy pinned to CPU %d, fortio on %s;\n",
		cfg.Load.Conns, cfg.Load.BodyBytes, cfg.MaxDuration, wr.ProxyCPU, client)
	fmt.Fprintf(w, "  %d interleaved rounds per proxy, each proxy's median round (by req per proxy CPU-second) shown\n", max(1, cfg.Rounds))
	fmt.Fprintf(w, "  waypoint = the mesh path above: per request it decrypts and parses HBONE (mTLS, HTTP/2) from ztunnel node1,\n")
	fmt.Fprintf(w, "    parses HTTP/1.1, routes, records metrics (no access log, as Istio by default), and sends HTTP/1.1 in HBONE\n")
	fmt.Fprintf(w, "    (mTLS, HTTP/2, pooled keep-alive streams) to ztunnel node2; the two ztunnels and the fortio server are in\n")
	fmt.Fprintf(w, "    the loop, unpinned (they may run on the proxy's CPU too)\n")
	fmt.Fprintf(w, "  nginx = one worker reverse proxy in its own non-mesh pod on node2 (where the waypoint runs): plaintext HTTP/1.1\n")
	fmt.Fprintf(w, "    from the client pod on node1, keep-alive upstream to the non-mesh server pod's fortio server over its veth,\n")
	fmt.Fprintf(w, "    access_log off, no TLS and no ztunnel in the loop; \"nginx in server pod\" is the same nginx inside the server\n")
	fmt.Fprintf(w, "    pod with its upstream over loopback (for reference: no hop of its own)\n")
	fmt.Fprintf(w, "  Both are closed loops of %d connections: when a proxy's CPU busy is well under 1, its req/s is bounded by the\n", cfg.Load.Conns)
	fmt.Fprintf(w, "    rest of the path, and req per proxy CPU-second is the fairer per-core comparison\n")
	t = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(t)
	fmt.Fprintln(t, "proxy\treq/s\tp50\tp99\terrors\tproxy CPU busy\treq per proxy CPU-second\tpeak RSS")
	for _, x := range []struct {
		name string
		r    MaxRate
	}{{"waypoint", wr.MaxWaypoint}, {"nginx", wr.MaxNginx}, {"nginx in server pod", wr.MaxNginxLocal}} {
		if x.r.Err != nil {
			fmt.Fprintf(t, "%s\terror (see below)\n", x.name)
			continue
		}
		l, u := x.r.Latency, x.r.Usage
		fmt.Fprintf(t, "%s\t%.0f\t%s\t%s\t%d\t%.2f\t%.0f\t%s\n", x.name, l.QPS, fmtDur(l.P50), fmtDur(l.P99), l.Errors,
			u.Utilisation(), x.r.PerCPUSecond(), fmtKB(u.PeakRSSKB))
	}
	_ = t.Flush()
	var maxRounds []string
	for _, x := range []struct {
		name   string
		rounds []MaxRate
	}{{"waypoint", wr.MaxWaypointRounds}, {"nginx", wr.MaxNginxRounds}, {"nginx in server pod", wr.MaxNginxLocalRounds}} {
		if len(x.rounds) == 0 {
			continue
		}
		vals := make([]string, len(x.rounds))
		for i, r := range x.rounds {
			vals[i] = "error"
			if r.Err == nil {
				vals[i] = fmt.Sprintf("%.0f", r.PerCPUSecond())
			}
		}
		maxRounds = append(maxRounds, x.name+" "+strings.Join(vals, "/"))
	}
	if len(maxRounds) > 0 {
		fmt.Fprintf(w, "  rounds, req per proxy CPU-second: %s\n", strings.Join(maxRounds, "; "))
	}
	if wp := wr.MaxWaypoint; wp.Err == nil && wp.Latency.Requests > 0 && wp.Usage.ReadCalls+wp.Usage.WriteCalls > 0 {
		n := float64(wp.Latency.Requests)
		fmt.Fprintf(w, "  waypoint read+write system calls per request: %.1f+%.1f (/proc/<pid>/io; nginx's recv/send are not counted there)\n",
			float64(wp.Usage.ReadCalls)/n, float64(wp.Usage.WriteCalls)/n)
	}
	if wp, ng := wr.MaxWaypoint, wr.MaxNginx; wp.Err == nil && ng.Err == nil && ng.Latency.QPS > 0 && ng.PerCPUSecond() > 0 {
		ratio := wp.Latency.QPS / ng.Latency.QPS
		eff := wp.PerCPUSecond() / ng.PerCPUSecond()
		fmt.Fprintf(w, "  waypoint / nginx: %.2fx req/s on one core (%s), %.2fx req per CPU-second (%s); target >= 0.5x per core\n",
			ratio, verdictOf(ratio >= targetVsNginx), eff, verdictOf(eff >= targetVsNginx))
	}
	if wp, ng := wr.MaxWaypoint, wr.MaxNginxLocal; wp.Err == nil && ng.Err == nil && ng.Latency.QPS > 0 && ng.PerCPUSecond() > 0 {
		fmt.Fprintf(w, "  waypoint / nginx in server pod: %.2fx req/s, %.2fx req per CPU-second\n",
			wp.Latency.QPS/ng.Latency.QPS, wp.PerCPUSecond()/ng.PerCPUSecond())
	}
	var errs []string
	for _, e := range []struct {
		what string
		err  error
	}{{"waypoint HTTP", via.LatencyErr}, {"ztunnel-only HTTP", base.LatencyErr}, {"waypoint usage", via.UsageErr},
		{"waypoint max rate", wr.MaxWaypoint.Err}, {"nginx max rate", wr.MaxNginx.Err},
		{"nginx in server pod max rate", wr.MaxNginxLocal.Err}} {
		if e.err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", e.what, e.err))
		}
	}
	for _, e := range errs {
		fmt.Fprintf(w, "  - %s\n", e)
	}
}

// printNginxHop writes a reference for the added latency, described by
// intro: what an nginx hop (named proxy) adds at the same load, outside
// the mesh, next to what the waypoint adds.
func printNginxHop(w io.Writer, wr *WaypointResult, via, base *PathResult, proxy, run, intro string) {
	if via == nil || base == nil {
		return
	}
	fmt.Fprintf(w, "\n%s\n", intro)
	if via.LatencyErr != nil || base.LatencyErr != nil {
		fmt.Fprintf(w, "  error: %v\n", cmp.Or(via.LatencyErr, base.LatencyErr))
		return
	}
	t := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(t)
	fmt.Fprintf(t, "metric\t%s\tvia %s\tadded by %s\tadded by the waypoint\n", base.Name, proxy, proxy)
	wpAdded := func(get func(Latency) time.Duration) string {
		if wr.Via == nil || wr.NoWaypoint == nil || wr.Via.LatencyErr != nil || wr.NoWaypoint.LatencyErr != nil {
			return "-"
		}
		return signedDur(get(wr.Via.Latency) - get(wr.NoWaypoint.Latency))
	}
	for _, m := range httpPercentiles {
		a, b := m.get(base.Latency), m.get(via.Latency)
		fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\n", m.name, fmtDur(a), fmtDur(b), signedDur(b-a), wpAdded(m.get))
	}
	if via.UsageErr == nil && len(via.Usage) > 0 {
		var u Usage
		for _, x := range via.Usage {
			u.CPU += x.CPU
			u.Wall, u.Requests = x.Wall, x.Requests
		}
		fmt.Fprintf(t, "%s vCPU per 1000 req/s\t\t%.3f\t\t\n", proxy, u.VCPUPer1kRPS())
	}
	_ = t.Flush()
	fmt.Fprintf(w, "  (medians of %d rounds of fortio %s; p99 µs per round: %s)\n", len(via.LatencyRounds), run, p99Rounds(base, via))
	fmt.Fprintf(w, "  (%s)\n", p99Buckets([]*PathResult{base, via}))
}

// p99Rounds lists each path's p99 per round in µs: "name 1200/1350, ...".
func p99Rounds(paths ...*PathResult) string {
	var rounds []string
	for _, p := range paths {
		var s []string
		for _, l := range p.LatencyRounds {
			s = append(s, fmt.Sprintf("%.0f", float64(l.P99)/float64(time.Microsecond)))
		}
		rounds = append(rounds, p.Name+" "+strings.Join(s, "/"))
	}
	return strings.Join(rounds, ", ")
}
