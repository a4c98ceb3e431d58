package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// checkWaypointSmoke checks the smoke run's waypoint scenario: both paths
// measured, the waypoint's usage read, and both max-rate runs served
// (nginx's only when it could be installed: nginxErr).
func checkWaypointSmoke(t *testing.T, res *Results, nginxErr error) {
	t.Helper()
	wr := res.Waypoint
	if wr == nil {
		t.Fatal("no waypoint results")
	}
	for _, p := range []*PathResult{wr.Via, wr.NoWaypoint} {
		if p.LatencyErr != nil || p.UsageErr != nil {
			t.Errorf("%s: %v %v", p.Name, p.LatencyErr, p.UsageErr)
		}
		if p.Latency.Requests == 0 || p.Latency.P99 <= 0 || p.Latency.Errors != 0 {
			t.Errorf("%s: empty or failed measurement: %+v", p.Name, p.Latency)
		}
	}
	if len(wr.Via.Usage) != 1 || wr.Via.Usage[0].CPU <= 0 || wr.Via.Usage[0].PeakRSSKB <= 0 {
		t.Errorf("waypoint usage: %+v", wr.Via.Usage)
	}
	if len(wr.NoWaypoint.Usage) != 0 {
		t.Errorf("ztunnel-only path measured proxies: %+v", wr.NoWaypoint.Usage)
	}
	maxes := map[string]MaxRate{"waypoint": wr.MaxWaypoint}
	if nginxErr == nil {
		maxes["nginx"] = wr.MaxNginx
		maxes["nginx in server pod"] = wr.MaxNginxLocal
	} else {
		t.Logf("nginx unavailable, its run is not checked: %v", nginxErr)
	}
	for name, m := range maxes {
		if m.Err != nil {
			t.Errorf("%s max rate: %v", name, m.Err)
			continue
		}
		if m.Latency.Requests == 0 || m.Latency.Errors != 0 || m.PerCPUSecond() <= 0 {
			t.Errorf("%s max rate: empty or failed: %+v %+v", name, m.Latency, m.Usage)
		}
	}
	if nginxErr != nil {
		return
	}
	// The latency references, plaintext and in C with the waypoint's
	// legs; only the L7 hops have proxies measured.
	for _, r := range []struct {
		via, base *PathResult
		err       error
	}{{wr.ViaNginx, wr.NoNginx, nil}, {wr.ViaNginxMTLS, wr.NoNginxMTLS, wr.NginxMTLSErr}} {
		if r.err != nil || r.via == nil || r.base == nil {
			t.Errorf("nginx latency reference missing: %v", r.err)
			continue
		}
		for _, p := range []*PathResult{r.via, r.base} {
			if p.LatencyErr != nil || p.Latency.Requests == 0 || p.Latency.Errors != 0 {
				t.Errorf("%s: empty or failed measurement: %v %+v", p.Name, p.LatencyErr, p.Latency)
			}
		}
		// 100 requests may take less CPU than one clock tick: the usage
		// is checked by its memory reading.
		if len(r.via.Usage) == 0 || r.via.Usage[0].PeakRSSKB <= 0 {
			t.Errorf("%s usage: %+v", r.via.Name, r.via.Usage)
		}
	}
}

// TestPinThreads pins a multi-threaded child to one CPU and back.
func TestPinThreads(t *testing.T) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), idleEnv+"=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	// Wait until the child runs its threads (it locks three).
	for deadline := time.Now().Add(10 * time.Second); threadCount(cmd.Process.Pid) < 4; {
		if time.Now().After(deadline) {
			t.Fatalf("child has %d threads after 10s", threadCount(cmd.Process.Pid))
		}
		time.Sleep(20 * time.Millisecond)
	}
	orig := allowed(t, cmd.Process.Pid)
	restore, err := pinThreads(cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	for tid, cpus := range allowed(t, cmd.Process.Pid) {
		if cpus != "0" {
			t.Errorf("thread %s allowed on %q after pinning, want 0", tid, cpus)
		}
	}
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	want := orig[fmt.Sprint(cmd.Process.Pid)]
	for tid, cpus := range allowed(t, cmd.Process.Pid) {
		if cpus != want {
			t.Errorf("thread %s allowed on %q after restore, want %q", tid, cpus, want)
		}
	}
	if _, err := pinThreads(1<<22+7, 0); err == nil {
		t.Error("pinning a missing process succeeded")
	}
}

// threadCount is the number of threads of pid (0 when unknown).
func threadCount(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0
	}
	return len(ents)
}

// allowed maps each thread of pid to its Cpus_allowed_list.
func allowed(t *testing.T, pid int) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range ents {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, e.Name()))
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
				out[e.Name()] = strings.TrimSpace(v)
			}
		}
	}
	if len(out) < 2 {
		t.Fatalf("want a multi-threaded process, found threads %v", out)
	}
	return out
}

// TestPrintWaypoint checks the waypoint report's verdicts against the
// issue's targets.
func TestPrintWaypoint(t *testing.T) {
	lat := func(p50, p99 time.Duration) []Latency {
		return []Latency{{P50: p50, P90: p99, P99: p99, QPS: 1000, Requests: 8000}}
	}
	tests := []struct {
		name      string
		viaP99    time.Duration
		cpu       time.Duration
		rssKB     int64
		wpQPS     float64
		nginxErr  error
		nginxHop  bool
		want, not []string
	}{
		{name: "all met", viaP99: 1500 * time.Microsecond, cpu: 1600 * time.Millisecond, rssKB: 40 * 1024, wpQPS: 6000,
			want: []string{"HTTP p99|+1.00 ms", "HTTP p99|met", "waypoint vCPU|0.200", "waypoint vCPU|met", "waypoint peak RSS|40.0 MB", "waypoint peak RSS|met",
				"waypoint / nginx|0.60x req/s on one core (met)", "waypoint / nginx|0.60x req per CPU-second (met)"},
			not: []string{"MISSED"}},
		{name: "all missed", viaP99: 3 * time.Millisecond, cpu: 4 * time.Second, rssKB: 70 * 1024, wpQPS: 4000,
			want: []string{"HTTP p99|+2.50 ms", "HTTP p99|MISSED", "waypoint vCPU|0.500", "waypoint vCPU|MISSED", "waypoint peak RSS|70.0 MB",
				"waypoint peak RSS|MISSED", "waypoint / nginx|0.40x req/s on one core (MISSED)", "waypoint / nginx|0.40x req per CPU-second (MISSED)"}},
		{name: "nginx failed", viaP99: time.Millisecond, cpu: time.Second, rssKB: 1024, wpQPS: 1, nginxErr: errors.New("no apt"),
			want: []string{"nginx|error", "- nginx max rate|no apt"}, not: []string{"waypoint / nginx", "reference, outside the mesh"}},
		{name: "nginx hop reference", viaP99: 1500 * time.Microsecond, cpu: time.Second, rssKB: 1024, wpQPS: 6000, nginxHop: true,
			want: []string{"reference, outside the mesh", "HTTP p99|400 µs", "HTTP p99|1.10 ms", "HTTP p99|+700 µs", "HTTP p99|+1.00 ms",
				"nginx vCPU per 1000 req/s|0.050", "(medians of 1 rounds|no-proxy 400, nginx 1100"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			via := &PathResult{Name: pathViaWaypoint, LatencyRounds: lat(time.Millisecond, tc.viaP99),
				Usage: []Usage{{Name: "waypoint", CPU: tc.cpu, Wall: 8 * time.Second, Requests: 8000, PeakRSSKB: tc.rssKB, PeakReset: true}}}
			base := &PathResult{Name: pathNoWaypoint, LatencyRounds: lat(time.Millisecond, 500*time.Microsecond)}
			via.summarise()
			base.summarise()
			mr := func(qps float64) MaxRate {
				return MaxRate{Latency: Latency{QPS: qps, Requests: int64(qps * 5)}, Usage: Usage{CPU: 5 * time.Second, Wall: 5 * time.Second}}
			}
			r := &Results{Config: cfg, Waypoint: &WaypointResult{Via: via, NoWaypoint: base, ProxyCPU: 1, ClientCPUs: "0",
				MaxWaypoint: mr(tc.wpQPS), MaxNginx: mr(10000)}}
			r.Waypoint.MaxNginx.Err = tc.nginxErr
			if tc.nginxHop {
				hop := &PathResult{Name: pathViaNginx, LatencyRounds: lat(time.Millisecond, 1100*time.Microsecond),
					Usage: []Usage{{Name: "nginx master", Wall: 8 * time.Second, Requests: 8000}, {Name: "nginx worker", CPU: 400 * time.Millisecond, Wall: 8 * time.Second, Requests: 8000}}}
				none := &PathResult{Name: pathNoNginx, LatencyRounds: lat(300*time.Microsecond, 400*time.Microsecond)}
				hop.summarise()
				none.summarise()
				r.Waypoint.ViaNginx, r.Waypoint.NoNginx = hop, none
			}
			var out bytes.Buffer
			printWaypoint(&out, r)
			for _, w := range tc.want {
				// prefix|text: the line starting with prefix holds text.
				prefix, text, _ := strings.Cut(w, "|")
				found := false
				for line := range strings.SplitSeq(out.String(), "\n") {
					if strings.HasPrefix(strings.TrimSpace(line), prefix) && strings.Contains(line, text) {
						found = true
					}
				}
				if !found {
					t.Errorf("report lacks a line %q with %q:\n%s", prefix, text, out.String())
				}
			}
			for _, n := range tc.not {
				if strings.Contains(out.String(), n) {
					t.Errorf("report has %q:\n%s", n, out.String())
				}
			}
		})
	}
}

// TestPrintReportWaypointOnly checks that -waypoint-only prints the
// waypoint tables and none of the data-plane ones.
func TestPrintReportWaypointOnly(t *testing.T) {
	for _, only := range []bool{false, true} {
		cfg := DefaultConfig()
		cfg.WaypointOnly = only
		via := &PathResult{Name: pathViaWaypoint, LatencyRounds: []Latency{{P50: time.Millisecond, P90: time.Millisecond, P99: time.Millisecond, Requests: 1}}}
		base := &PathResult{Name: pathNoWaypoint, LatencyRounds: via.LatencyRounds}
		via.summarise()
		base.summarise()
		r := &Results{Config: cfg, Waypoint: &WaypointResult{Via: via, NoWaypoint: base}}
		var out bytes.Buffer
		printReport(&out, r)
		s := out.String()
		if got := strings.Contains(s, "throughput, iperf3"); got == only {
			t.Errorf("waypoint-only=%v: data-plane table printed=%v:\n%s", only, got, s)
		}
		if !strings.Contains(s, "via waypoint") {
			t.Errorf("waypoint-only=%v: no waypoint table:\n%s", only, s)
		}
	}
}

// TestMedianRate picks the round with the median requests per CPU-second,
// skipping failed rounds.
func TestMedianRate(t *testing.T) {
	rate := func(req int64, cpu time.Duration) MaxRate {
		return MaxRate{Latency: Latency{Requests: req}, Usage: Usage{CPU: cpu}}
	}
	failed := MaxRate{Err: errors.New("fortio failed")}
	for _, tc := range []struct {
		name   string
		rounds []MaxRate
		want   float64
		err    bool
	}{
		{"three rounds", []MaxRate{rate(300, time.Second), rate(100, time.Second), rate(200, time.Second)}, 200, false},
		{"a failed round is skipped", []MaxRate{failed, rate(100, time.Second), rate(300, time.Second)}, 300, false},
		{"all failed", []MaxRate{failed, failed}, 0, true},
		{"none", nil, 0, true},
	} {
		got := medianRate(tc.rounds)
		if (got.Err != nil) != tc.err || got.PerCPUSecond() != tc.want {
			t.Errorf("%s: got %v req/CPU-s err %v, want %v err %v", tc.name, got.PerCPUSecond(), got.Err, tc.want, tc.err)
		}
	}
}
