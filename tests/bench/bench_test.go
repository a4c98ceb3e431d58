package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zmesh/zmesh/tests/e2e/cluster"
	"github.com/zmesh/zmesh/tests/e2e/echo"
)

// echoEnv makes the test binary act as the echo app inside pods, so the
// smoke test needs no separate echo build.
const echoEnv = "ZMESH_BENCH_RUN_ECHO"

// idleEnv makes the test binary sleep (a process for TestPinThreads).
const idleEnv = "ZMESH_BENCH_IDLE"

func TestMain(m *testing.M) {
	if os.Getenv(idleEnv) == "1" {
		// A multi-threaded idle child for TestPinThreads: goroutines
		// locked to their threads make sure it has several.
		for range 3 {
			go func() {
				runtime.LockOSThread()
				select {}
			}()
		}
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	if os.Getenv(echoEnv) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := echo.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// TestBenchSmoke runs a very short bench (1 s iperf3, 100 HTTP requests,
// a few hundred connections) so a broken bench shows up in `make test`.
// It never builds ghostunnel; the comparison path is exercised only when
// `make bench` has built it before.
func TestBenchSmoke(t *testing.T) {
	cluster.SkipUnlessRoot(t)
	if testing.Short() {
		t.Skip("skipping the bench smoke test in -short mode")
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := defaultToolsDir()
	if _, err := ensureTools(ctx, dir, false, false, log); err != nil {
		t.Skipf("skipping: iperf3 or fortio cannot be installed here: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "ztunnel")
	if out, err := exec.CommandContext(ctx, goTool(), "build", "-o", bin, "github.com/zmesh/zmesh/ztunnel/cmd/ztunnel").CombinedOutput(); err != nil {
		t.Fatalf("build ztunnel: %v\n%s", err, out)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		ZtunnelBin: bin, EchoBin: self,
		EchoEnv:  []string{echoEnv + "=1", "GORACE=" + strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0")},
		ToolsDir: dir, Prefix: "zmbencht",
		IperfDuration:   time.Second,
		Load:            LoadSpec{QPS: 1000, Conns: 4, Requests: 100, BodyBytes: 1024},
		ConnRateWorkers: 2, ConnRateMax: 100, ConnRateDuration: time.Second, PingCount: 50,
		IdleConns: 50, IdleSettle: 100 * time.Millisecond,
		Ghostunnel: isExecutable(filepath.Join(dir, "ghostunnel-"+ghostunnelVersion)),
		ProfileDir: t.TempDir(),
		// The waypoint binary is built into the run's work dir.
		Waypoint: true, MaxDuration: time.Second,
		Logger: log, MeshLogger: log,
	}
	// nginx serves the waypoint's max-rate comparison and, with its stream
	// module, the mTLS reference path.
	_, nginxErr := ensureNginxStream(ctx)
	cfg.NginxTLS = nginxErr == nil
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	printReport(&out, res)
	t.Log(out.String())

	want := []string{pathDirect, pathMesh}
	if cfg.Ghostunnel {
		want = append(want, pathGhostunnel)
	}
	if cfg.NginxTLS {
		want = append(want, pathNginxTLS)
	}
	if len(res.Paths) != len(want) {
		t.Fatalf("measured %d paths, want %v", len(res.Paths), want)
	}
	for i, p := range res.Paths {
		if p.Name != want[i] {
			t.Errorf("path %d is %s, want %s", i, p.Name, want[i])
		}
		for what, err := range map[string]error{"iperf3": p.ThroughputErr, "HTTP": p.LatencyErr, "usage": p.UsageErr, "conn rate": p.ConnRateErr, "ping": p.PingErr, "idle": p.IdleErr} {
			if err != nil {
				t.Errorf("%s %s: %v", p.Name, what, err)
			}
		}
		if p.Throughput.BitsPerSecond <= 0 || p.Latency.Requests == 0 || p.Latency.P99 <= 0 || p.ConnRate.Conns == 0 ||
			p.Ping.Requests != int64(cfg.PingCount) || p.Ping.P50 <= 0 || p.Ping.P99 < p.Ping.P50 {
			t.Errorf("%s: empty measurement: %+v %+v %+v %+v", p.Name, p.Throughput, p.Latency, p.ConnRate, p.Ping)
		}
		if p.Name != pathDirect && (len(p.Usage) != 2 || len(p.Idle) != 2 || len(p.IperfUsage) != 2) {
			t.Errorf("%s: want usage and idle growth of 2 proxies, got %+v / %+v", p.Name, p.Usage, p.Idle)
		}
	}
	checkWaypointSmoke(t, res, nginxErr)
	for _, w := range res.Warnings {
		t.Errorf("warning: %s", w)
	}
	for _, f := range []string{"iperf3-ztunnel-node1.pprof", "http-ztunnel-node2.pprof", "http-waypoint.pprof", "max-waypoint.pprof"} {
		if st, err := os.Stat(filepath.Join(cfg.ProfileDir, f)); err != nil || st.Size() == 0 {
			t.Errorf("profile %s: %v", f, err)
		}
	}
}

// TestParse checks the parsers against the tools' output formats.
func TestParse(t *testing.T) {
	l, err := parseFortio([]byte(`{"ActualQPS": 999.5, "RetCodes": {"200": 98, "503": 2},
		"DurationHistogram": {"Count": 100, "Data": [
			{"Start": 0.00002, "End": 0.001, "Percent": 95}, {"Start": 0.001, "End": 0.002, "Percent": 99},
			{"Start": 0.002, "End": 0.0025, "Percent": 100}], "Percentiles": [
			{"Percentile": 50, "Value": 0.000042}, {"Percentile": 90, "Value": 0.0001}, {"Percentile": 99, "Value": 0.0015}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if l.P50 != 42*time.Microsecond || l.P90 != 100*time.Microsecond || l.P99 != 1500*time.Microsecond || l.Errors != 2 || l.Requests != 100 ||
		l.P99Bucket != [2]time.Duration{time.Millisecond, 2 * time.Millisecond} {
		t.Errorf("fortio: %+v", l)
	}
	r, err := parseIperf([]byte("warning: something\n{\"end\": {\"sum_sent\": {\"bits_per_second\": 2e9, \"retransmits\": 3}, \"sum_received\": {\"bits_per_second\": 1.9e9}}}"))
	if err != nil || r.End.SumReceived.BitsPerSecond != 1.9e9 || r.End.SumSent.Retransmits != 3 {
		t.Errorf("iperf3: %+v %v", r, err)
	}
	if u := (Usage{CPU: 500 * time.Millisecond, Requests: 10000}); u.VCPUPer1kRPS() != 0.05 {
		t.Errorf("vCPU per 1000 req/s = %v, want 0.05", u.VCPUPer1kRPS())
	}
	if cpu, err := cpuTime(os.Getpid()); err != nil || cpu < 0 {
		t.Errorf("cpu time: %v %v", cpu, err)
	}
	if kb, err := memKB(os.Getpid(), "VmRSS"); err != nil || kb <= 0 {
		t.Errorf("VmRSS: %v %v", kb, err)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
