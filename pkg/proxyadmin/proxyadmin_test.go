package proxyadmin

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "zmesh_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Inc()
	var notReady atomic.Value
	notReady.Store("xds not synced")
	var dumpErr atomic.Bool
	var reported atomic.Int32
	s, err := Start(Config{
		AdminAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", ReadyAddr: "127.0.0.1:0",
		Gatherer: reg, MetricsPaths: []string{"/metrics", "/stats/prometheus"},
		ConfigDump: func() (any, error) {
			if dumpErr.Load() {
				return nil, errors.New("secret detail")
			}
			return map[string]int{"workloads": 3}, nil
		},
		NotReady:    func() string { return notReady.Load().(string) },
		OnDumpError: func(error) { reported.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	admin, metrics, ready := "http://"+s.AdminAddr().String(), "http://"+s.MetricsAddr().String(), "http://"+s.ReadyAddr().String()

	for _, url := range []string{ready + "/healthz/ready", admin + "/healthz/ready"} {
		if code, body := get(t, url); code != http.StatusServiceUnavailable || !strings.Contains(body, "xds not synced") {
			t.Errorf("%s before ready: %d %q", url, code, body)
		}
	}
	notReady.Store("")
	if code, _ := get(t, ready+"/healthz/ready"); code != http.StatusOK {
		t.Errorf("ready: %d", code)
	}
	for _, p := range []string{"/config_dump", "/debug/config_dump"} {
		if code, body := get(t, admin+p); code != http.StatusOK || !strings.Contains(body, `"workloads": 3`) {
			t.Errorf("%s: %d %q", p, code, body)
		}
	}
	dumpErr.Store(true)
	if code, body := get(t, admin+"/config_dump"); code != http.StatusInternalServerError || strings.Contains(body, "secret") || reported.Load() != 1 {
		t.Errorf("failing dump: %d %q, reported %d", code, body, reported.Load())
	}
	for _, p := range []string{"/metrics", "/stats/prometheus"} {
		if code, body := get(t, metrics+p); code != http.StatusOK || !strings.Contains(body, "zmesh_test_total 1") {
			t.Errorf("%s: %d %q", p, code, body)
		}
	}
	// The bench's -profile reads execution traces from the admin port only.
	if code, body := get(t, admin+"/debug/pprof/trace?seconds=0.05"); code != http.StatusOK || !strings.HasPrefix(body, "go 1.") {
		t.Errorf("execution trace: %d, %d bytes", code, len(body))
	}
	if code, _ := get(t, metrics+"/debug/pprof/trace?seconds=0.05"); code != http.StatusNotFound {
		t.Errorf("execution trace on the metrics port: %d", code)
	}
	if code, _ := get(t, ready+"/config_dump"); code != http.StatusNotFound {
		t.Errorf("config dump on the readiness port: %d", code)
	}
}

func TestStartFailsCleanly(t *testing.T) {
	s, err := Start(Config{AdminAddr: "127.0.0.1:0", MetricsAddr: "256.0.0.1:1", ReadyAddr: "127.0.0.1:0",
		Gatherer: prometheus.NewRegistry(), ConfigDump: func() (any, error) { return nil, nil }, NotReady: func() string { return "" }})
	if err == nil || s != nil {
		t.Fatalf("Start with a bad address: %v, %v", s, err)
	}
	var nilServers *Servers
	nilServers.Stop()
	if nilServers.AdminAddr() != nil {
		t.Error("nil Servers has an address")
	}
}
