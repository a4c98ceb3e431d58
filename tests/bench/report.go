package main

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// The targets for the data plane.
const (
	targetAddedP99     = 300 * time.Microsecond
	targetThroughput   = 5e9 // bit/s
	targetVsGhostunnel = 0.8
	targetVCPUPer1k    = 0.1
	targetIdleKB       = 10.0
)

// printReport writes the results as compact tables.
func printReport(w io.Writer, r *Results) {
	cfg := r.Config
	if cfg.WaypointOnly {
		fmt.Fprintf(w, "\nzmesh waypoint scenario only (-waypoint-only)\n")
		fmt.Fprintf(w, "  %s, %d CPUs, load average %s at start; took %v. The machine is shared, so numbers are noisy.\n",
			r.Started.UTC().Format(time.RFC3339), runtime.NumCPU(), r.LoadAvg, r.Elapsed.Round(time.Second))
		printWaypoint(w, r)
		printErrors(w, r)
		return
	}
	fmt.Fprintf(w, "\nzmesh data plane: pod -> pod across two nodes (client on node1, server on node2)\n")
	fmt.Fprintf(w, "  %s, %d CPUs, load average %s at start; took %v. The machine is shared, so numbers are noisy:\n",
		r.Started.UTC().Format(time.RFC3339), runtime.NumCPU(), r.LoadAvg, r.Elapsed.Round(time.Second))
	fmt.Fprintf(w, "  ratios compare with the direct path measured in this same run.\n")
	fmt.Fprintf(w, "  direct = pods outside the mesh; ztunnel = ambient pods (in-pod capture -> HBONE mTLS -> ztunnel on node2);\n")
	if r.Path(pathGhostunnel) != nil {
		fmt.Fprintf(w, "  ghostunnel = two ghostunnel %s hops (client in the source pod, server in the destination pod, mTLS between).\n", ghostunnelVersion)
	} else {
		fmt.Fprintf(w, "  ghostunnel comparison SKIPPED: %v\n", r.Tools.GhostunnelErr)
	}

	direct, mesh, ghost := r.Path(pathDirect), r.Path(pathMesh), r.Path(pathGhostunnel)
	t := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(t)
	fmt.Fprintln(t, "metric\tdirect\tztunnel\tvs direct\t2x ghostunnel\tvs direct\ttarget\tverdict")
	row := func(name string, val func(*PathResult) (string, float64, error), cmp func(mesh, direct float64) string, target, verdict string) {
		cells := []string{name}
		var base float64
		for i, p := range []*PathResult{direct, mesh, ghost} {
			if p == nil {
				cells = append(cells, "-", "")
				continue
			}
			s, v, err := val(p)
			if err != nil {
				s, v = "error", 0
			}
			if i == 0 {
				base = v
				cells = append(cells, s)
				continue
			}
			c := ""
			if err == nil && base > 0 {
				c = cmp(v, base)
			}
			cells = append(cells, s, c)
		}
		cells = append(cells, target, verdict)
		fmt.Fprintln(t, strings.Join(cells, "\t"))
	}
	ratio := func(v, base float64) string { return fmt.Sprintf("%.2fx", v/base) }
	added := func(v, base float64) string {
		return fmt.Sprintf("%.1fx %s", v/base, signedDur(time.Duration(v-base)))
	}

	row("throughput, iperf3 1 stream", func(p *PathResult) (string, float64, error) {
		return fmtBits(p.Throughput.BitsPerSecond), p.Throughput.BitsPerSecond, p.ThroughputErr
	}, ratio, ">= 5 Gbit/s, >= 0.8x ghostunnel", throughputVerdict(mesh, ghost))
	lat := func(get func(Latency) time.Duration) func(*PathResult) (string, float64, error) {
		return func(p *PathResult) (string, float64, error) {
			d := get(p.Latency)
			return fmtDur(d), float64(d), p.LatencyErr
		}
	}
	load := fmt.Sprintf("%d req/s, %d conns, %d B", cfg.Load.QPS, cfg.Load.Conns, cfg.Load.BodyBytes)
	row("HTTP p50 ("+load+")", lat(func(l Latency) time.Duration { return l.P50 }), added, "", "")
	row("HTTP p90", lat(func(l Latency) time.Duration { return l.P90 }), added, "", "")
	row("HTTP p99", lat(func(l Latency) time.Duration { return l.P99 }), added, "added p99 <= 0.3 ms", p99Verdict(direct, mesh))
	row("HTTP achieved", func(p *PathResult) (string, float64, error) {
		return fmt.Sprintf("%.0f/s, %d err", p.Latency.QPS, p.Latency.Errors), p.Latency.QPS, p.LatencyErr
	}, ratio, "", "")
	row("new connections/s", func(p *PathResult) (string, float64, error) {
		c := p.ConnRate
		s := fmt.Sprintf("%.0f/s", c.PerSecond)
		if c.Errors > 0 {
			s += fmt.Sprintf(" (%d err)", c.Errors)
		}
		return s, c.PerSecond, p.ConnRateErr
	}, ratio, "", "")
	ping := func(get func(Latency) time.Duration) func(*PathResult) (string, float64, error) {
		return func(p *PathResult) (string, float64, error) {
			d := get(p.Ping)
			return fmtDur(d), float64(d), p.PingErr
		}
	}
	row(fmt.Sprintf("1-byte echo p50 (%v apart, idle)", pingGap), ping(func(l Latency) time.Duration { return l.P50 }), added, "", "")
	row("1-byte echo p99", ping(func(l Latency) time.Duration { return l.P99 }), added, "", "")
	_ = t.Flush()
	run := cfg.Load.Duration.String()
	if cfg.Load.Requests > 0 {
		run = fmt.Sprintf("%d requests", cfg.Load.Requests)
	}
	fmt.Fprintf(w, "  (medians of %d interleaved rounds of iperf3 -t %v and fortio %s at -r %s; new connections: %d dialers,\n"+
		"   each connection a 1-byte echo round trip, at most %d or %v)\n",
		max(1, cfg.Rounds), cfg.IperfDuration, run, cfg.Load.resolutionArg(), cfg.ConnRateWorkers, cfg.ConnRateMax, cfg.ConnRateDuration)
	fmt.Fprintf(w, "  (HTTP arrivals: %s)\n", arrivals(cfg.Load))
	fmt.Fprintf(w, "  (%s)\n", p99Buckets(r.Paths))
	fmt.Fprintf(w, "  (1-byte echo: %d round trips over one connection with the path idle in between, so every process on it\n"+
		"   sleeps and must be woken once per direction: the direct path wakes two, each proxy adds two more. It is the\n"+
		"   machine's floor under the latency rows: a pair of proxies adds about twice the direct figure before any work)\n", cfg.PingCount)
	printRounds(w, r)
	printNginxTLS(w, r)

	nginx := r.Path(pathNginxTLS)
	printUsage(w, r, mesh, ghost, nginx)
	printIdle(w, mesh, ghost, nginx)
	printWaypoint(w, r)
	printErrors(w, r)
}

// printNginxTLS sets the ztunnel pair beside two nginx stream mTLS hops
// measured in the same run: what a pair of L4 mTLS proxies written in C
// adds in the same places on this machine.
func printNginxTLS(w io.Writer, r *Results) {
	direct, mesh, nginx := r.Path(pathDirect), r.Path(pathMesh), r.Path(pathNginxTLS)
	if nginx == nil {
		fmt.Fprintf(w, "\nnginx mTLS reference SKIPPED: %v\n", r.Tools.NginxStreamErr)
		return
	}
	fmt.Fprintf(w, "\nreference: two nginx stream mTLS hops (Debian's nginx: C, OpenSSL, TLS 1.3 with the same ECDSA P-256 certificates as\n"+
		"  ghostunnel's, one event-loop worker per hop; client hop in the source pod, server hop in the destination pod), plain\n"+
		"  TCP relaying: what two L4 mTLS proxies in the ztunnels' places add on this machine, same rounds as above\n")
	t := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(t)
	fmt.Fprintln(t, "metric\tdirect\t2x nginx mTLS\tadded by nginx\tadded by ztunnel")
	bps := func(p *PathResult) float64 { return p.Throughput.BitsPerSecond }
	fmt.Fprintf(t, "throughput, iperf3 1 stream\t%s\t%s\t%s\t%s\n", fmtResult(fmtBits(bps(direct)), direct.ThroughputErr),
		fmtResult(fmtBits(bps(nginx)), nginx.ThroughputErr), ratioOf(bps(nginx), bps(direct)), ratioOf(bps(mesh), bps(direct)))
	lat := func(name string, get func(*PathResult) (time.Duration, error)) {
		base, berr := get(direct)
		v, err := get(nginx)
		cells := []string{name, fmtResult(fmtDur(base), berr), fmtResult(fmtDur(v), err)}
		for _, p := range []*PathResult{nginx, mesh} {
			v, err := get(p)
			if err != nil || berr != nil {
				cells = append(cells, "-")
				continue
			}
			cells = append(cells, signedDur(v-base))
		}
		fmt.Fprintln(t, strings.Join(cells, "\t"))
	}
	for _, q := range httpPercentiles {
		lat(q.name, func(p *PathResult) (time.Duration, error) { return q.get(p.Latency), p.LatencyErr })
	}
	lat("1-byte echo p50", func(p *PathResult) (time.Duration, error) { return p.Ping.P50, p.PingErr })
	lat("1-byte echo p99", func(p *PathResult) (time.Duration, error) { return p.Ping.P99, p.PingErr })
	_ = t.Flush()
}

func fmtResult(s string, err error) string {
	if err != nil {
		return "error"
	}
	return s
}

// httpPercentiles are the HTTP latency rows of the reference tables.
var httpPercentiles = []struct {
	name string
	get  func(Latency) time.Duration
}{
	{"HTTP p50", func(l Latency) time.Duration { return l.P50 }},
	{"HTTP p90", func(l Latency) time.Duration { return l.P90 }},
	{"HTTP p99", func(l Latency) time.Duration { return l.P99 }},
}

// ratioOf is v/base as a ratio ("-" without a base).
func ratioOf(v, base float64) string {
	if base <= 0 || v <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", v/base)
}

// printRounds shows every round behind the medians.
func printRounds(w io.Writer, r *Results) {
	var tput, p99 []string
	for _, p := range r.Paths {
		var a, b []string
		for _, t := range p.ThroughputRounds {
			a = append(a, fmt.Sprintf("%.2f", t.BitsPerSecond/1e9))
		}
		for _, l := range p.LatencyRounds {
			b = append(b, fmt.Sprintf("%.0f", float64(l.P99)/float64(time.Microsecond)))
		}
		tput = append(tput, p.Name+" "+strings.Join(a, "/"))
		p99 = append(p99, p.Name+" "+strings.Join(b, "/"))
	}
	fmt.Fprintf(w, "  rounds: iperf3 Gbit/s: %s; HTTP p99 µs: %s\n", strings.Join(tput, ", "), strings.Join(p99, ", "))
}

func printUsage(w io.Writer, r *Results, paths ...*PathResult) {
	t := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(t, "\nproxy CPU and memory during the HTTP run\n")
	fmt.Fprintln(t, "process\trequests\tCPU\tbusy vCPU\tvCPU per 1000 req/s\tpeak RSS\tiperf3: busy vCPU\tCPU s per GB\ttarget\tverdict")
	for _, p := range paths {
		if p == nil {
			continue
		}
		if p.UsageErr != nil {
			fmt.Fprintf(t, "%s\terror (see below)\n", p.Name)
			continue
		}
		for i, u := range p.Usage {
			target, verdict := "", ""
			if p.Name == pathMesh {
				target, verdict = "<= 0.1 per ztunnel", verdictOf(u.VCPUPer1kRPS() <= targetVCPUPer1k)
			}
			peak := fmtKB(u.PeakRSSKB)
			if !u.PeakReset {
				peak += " (lifetime)"
			}
			busy, perGB := "", ""
			if i < len(p.IperfUsage) {
				iu := p.IperfUsage[i]
				busy = fmt.Sprintf("%.2f", iu.Utilisation())
				if p.Throughput.Bytes > 0 {
					perGB = fmt.Sprintf("%.2f", iu.CPU.Seconds()/(float64(p.Throughput.Bytes)/1e9))
				}
			}
			fmt.Fprintf(t, "%s\t%d\t%.2f s\t%.3f\t%.3f\t%s\t%s\t%s\t%s\t%s\n", u.Name, u.Requests, u.CPU.Seconds(),
				u.Utilisation(), u.VCPUPer1kRPS(), peak, busy, perGB, target, verdict)
		}
	}
	_ = t.Flush()
	// System calls per MB moved (iperf3) and per request (HTTP): where
	// the proxies' CPU goes on small and large transfers.
	var calls []string
	for _, p := range paths {
		if p == nil || p.Throughput.Bytes == 0 {
			continue
		}
		mb := float64(p.Throughput.Bytes) / 1e6
		for i, iu := range p.IperfUsage {
			s := fmt.Sprintf("%s %.1f+%.1f/MB", iu.Name, float64(iu.ReadCalls)/mb, float64(iu.WriteCalls)/mb)
			if i < len(p.Usage) && p.Usage[i].Requests > 0 {
				u := p.Usage[i]
				s += fmt.Sprintf(" %.1f+%.1f/req", float64(u.ReadCalls)/float64(u.Requests), float64(u.WriteCalls)/float64(u.Requests))
			}
			calls = append(calls, s)
		}
	}
	if len(calls) > 0 {
		fmt.Fprintf(w, "  read+write syscalls (iperf3 per MB, HTTP per request; /proc/<pid>/io, which counts read and write but not the\n"+
			"   recv and send nginx uses on plain sockets): %s\n", strings.Join(calls, "; "))
	}
}

func printIdle(w io.Writer, paths ...*PathResult) {
	t := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(t, "\nRSS growth with idle proxied connections (each proven with a 1-byte echo, then held idle)\n")
	fmt.Fprintln(t, "process\tconnections\tRSS before\tRSS after\tKB per connection\ttarget\tverdict")
	for _, p := range paths {
		if p == nil {
			continue
		}
		if p.IdleErr != nil {
			fmt.Fprintf(t, "%s\terror (see below)\n", p.Name)
			continue
		}
		for _, g := range p.Idle {
			target, verdict := "", ""
			if p.Name == pathMesh {
				target, verdict = "<= 10 KB", verdictOf(g.KBPerConn() <= targetIdleKB)
			}
			fmt.Fprintf(t, "%s\t%d\t%s\t%s\t%.1f\t%s\t%s\n", g.Name, g.Conns, fmtKB(g.BeforeKB), fmtKB(g.AfterKB), g.KBPerConn(), target, verdict)
		}
	}
	_ = t.Flush()
}

func printErrors(w io.Writer, r *Results) {
	var lines []string
	for _, p := range r.Paths {
		for _, e := range []struct {
			what string
			err  error
		}{{"iperf3", p.ThroughputErr}, {"HTTP", p.LatencyErr}, {"proxy usage", p.UsageErr}, {"new connections", p.ConnRateErr}, {"1-byte echo", p.PingErr}, {"idle connections", p.IdleErr}} {
			if e.err != nil {
				lines = append(lines, fmt.Sprintf("%s %s: %v", p.Name, e.what, e.err))
			}
		}
		if c := p.ConnRate; p.ConnRateErr == nil && c.Errors > 0 {
			lines = append(lines, fmt.Sprintf("%s new connections: %d of %d attempts failed, last: %v", p.Name, c.Errors, c.Errors+c.Conns, c.LastErr))
		}
	}
	lines = append(lines, r.Warnings...)
	if len(r.Noisy) > 0 {
		fmt.Fprintf(w, "\nnot a quiet machine (the latency tails above include what these take):\n")
		for _, l := range r.Noisy {
			fmt.Fprintf(w, "  - %s\n", l)
		}
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintf(w, "\nproblems:\n")
	for _, l := range lines {
		fmt.Fprintf(w, "  - %s\n", l)
	}
}

func throughputVerdict(mesh, ghost *PathResult) string {
	if mesh == nil || mesh.ThroughputErr != nil {
		return "n/a"
	}
	v := mesh.Throughput.BitsPerSecond
	abs := v >= targetThroughput
	if ghost == nil || ghost.ThroughputErr != nil || ghost.Throughput.BitsPerSecond == 0 {
		return verdictOf(abs) + " (absolute only; no ghostunnel)"
	}
	rel := v / ghost.Throughput.BitsPerSecond
	return fmt.Sprintf("%s (%.2fx ghostunnel)", verdictOf(abs && rel >= targetVsGhostunnel), rel)
}

func p99Verdict(direct, mesh *PathResult) string {
	if direct == nil || mesh == nil || direct.LatencyErr != nil || mesh.LatencyErr != nil {
		return "n/a"
	}
	add := mesh.Latency.P99 - direct.Latency.P99
	if add < 0 {
		// Two proxies cannot take latency away: the direct path's tail was
		// the noisier one, and the run says nothing about the target.
		return fmt.Sprintf("inconclusive (%s: direct p99 was the higher)", signedDur(add))
	}
	return fmt.Sprintf("%s (%s)", verdictOf(add <= targetAddedP99), signedDur(add))
}

func verdictOf(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func fmtBits(bps float64) string {
	if bps >= 1e9 {
		return fmt.Sprintf("%.2f Gbit/s", bps/1e9)
	}
	return fmt.Sprintf("%.0f Mbit/s", bps/1e6)
}

func fmtDur(d time.Duration) string {
	if d < time.Millisecond && d > -time.Millisecond {
		return fmt.Sprintf("%d µs", d.Microseconds())
	}
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

func signedDur(d time.Duration) string {
	if d < 0 {
		return "-" + fmtDur(-d)
	}
	return "+" + fmtDur(d)
}

func fmtKB(kb int64) string {
	return fmt.Sprintf("%.1f MB", float64(kb)/1024)
}

// p99Buckets names the fortio histogram bucket each path's p99 fell in:
// fortio interpolates inside it, so its width is the p99's precision.
func p99Buckets(paths []*PathResult) string {
	var s []string
	for _, p := range paths {
		if p == nil || p.LatencyErr != nil || p.Latency.P99Bucket[1] == 0 {
			continue
		}
		s = append(s, fmt.Sprintf("%s %s-%s", p.Name, fmtDur(p.Latency.P99Bucket[0]), fmtDur(p.Latency.P99Bucket[1])))
	}
	return "p99 histogram bucket, inside which fortio interpolates linearly: " + strings.Join(s, ", ")
}

// arrivals describes how the HTTP load's requests arrive.
func arrivals(l LoadSpec) string {
	if l.Uniform {
		return "each connection's requests spread over the period (fortio -uniform)"
	}
	return fmt.Sprintf("fortio's default, the %d connections send in lockstep: a burst of %d requests every %v", l.Conns, l.Conns,
		time.Duration(float64(time.Second)*float64(l.Conns)/float64(max(1, l.QPS))))
}
