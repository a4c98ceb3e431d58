package app

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sort"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/zmesh/zmesh/controller/configdir"
	"github.com/zmesh/zmesh/controller/index"
)

// startMonitoring serves /metrics, /healthz/ready and /debug/config_dump.
func (a *App) startMonitoring() error {
	if a.cfg.MonitoringAddr == "-" {
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz/ready", a.serveReady)
	mux.HandleFunc("/debug/config_dump", localOnly(a.serveConfigDump))
	lis, err := net.Listen("tcp", a.cfg.MonitoringAddr)
	if err != nil {
		return fmt.Errorf("monitoring listen: %w", err)
	}
	a.monLis = lis
	a.mon = &http.Server{Handler: mux, ReadHeaderTimeout: 10e9}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := a.mon.Serve(lis); err != nil && err != http.ErrServerClosed {
			a.log.Error("monitoring server failed", "err", err)
		}
	}()
	return nil
}

// localOnly serves h to loopback callers only: the debug endpoints show
// every workload and policy of the mesh, and the monitoring port listens
// on all interfaces for the metrics scrapers. Reach them from inside the
// pod (kubectl exec, kubectl port-forward).
func localOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err != nil || !ap.Addr().Unmap().IsLoopback() {
			http.Error(w, "debug endpoints answer local callers only (use kubectl port-forward)", http.StatusForbidden)
			return
		}
		h(w, r)
	}
}

// serveReady answers 200 once the first snapshot has been published.
func (a *App) serveReady(w http.ResponseWriter, _ *http.Request) {
	if a.state.Load() == nil {
		http.Error(w, "no configuration loaded yet", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

// configDump is the JSON shape of /debug/config_dump.
type configDump struct {
	Workloads     []json.RawMessage   `json:"workloads"`
	Services      []json.RawMessage   `json:"services"`
	Policies      []json.RawMessage   `json:"policies"`
	IndexProblems []index.Problem     `json:"indexProblems"`
	FileProblems  []configdir.Problem `json:"fileProblems"`
}

func (a *App) serveConfigDump(w http.ResponseWriter, _ *http.Request) {
	s := a.state.Load()
	if s == nil {
		http.Error(w, "no configuration loaded yet", http.StatusServiceUnavailable)
		return
	}
	dump := configDump{
		Workloads:     marshalSorted(s.out.Workloads),
		Services:      marshalSorted(s.out.Services),
		Policies:      marshalSorted(s.out.Policies),
		IndexProblems: s.out.Problems,
	}
	if src, ok := a.source.(*configdir.Source); ok {
		dump.FileProblems = src.Problems()
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(dump)
}

// marshalSorted renders a map of messages as JSON, ordered by key.
func marshalSorted[M proto.Message](m map[string]M) []json.RawMessage {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]json.RawMessage, 0, len(keys))
	for _, k := range keys {
		b, err := protojson.Marshal(m[k])
		if err != nil {
			b, _ = json.Marshal(map[string]string{"name": k, "error": err.Error()})
		}
		out = append(out, b)
	}
	return out
}
