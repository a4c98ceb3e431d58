// Package proxyadmin serves the HTTP endpoints every zmesh proxy (ztunnel,
// waypoint) has, on Istio's ports: admin (config dump and pprof, 15000),
// Prometheus metrics (15020) and readiness (15021), each on its own
// listener.
package proxyadmin

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config describes one proxy's endpoints.
type Config struct {
	// AdminAddr, MetricsAddr and ReadyAddr are the listen addresses.
	AdminAddr, MetricsAddr, ReadyAddr string
	// Gatherer is served on every path of MetricsPaths. Required.
	Gatherer     prometheus.Gatherer
	MetricsPaths []string
	// ConfigDump returns what /config_dump (and /debug/config_dump) shows
	// as indented JSON. Required.
	ConfigDump func() (any, error)
	// NotReady says why the proxy is not ready; "" means ready. Required.
	NotReady func() string
	// OnDumpError is told when ConfigDump fails (the client gets a 500
	// without the details); may be nil.
	OnDumpError func(error)
}

// Servers are the running endpoints. Stop ends them.
type Servers struct {
	cfg     Config
	servers []*http.Server
	addrs   []net.Addr // admin, metrics, ready
	wg      sync.WaitGroup
}

// Start listens on the three addresses and serves them until Stop. On
// error nothing is left running.
func Start(cfg Config) (*Servers, error) {
	s := &Servers{cfg: cfg}
	admin := http.NewServeMux()
	admin.HandleFunc("/config_dump", s.serveConfigDump)
	admin.HandleFunc("/debug/config_dump", s.serveConfigDump)
	admin.HandleFunc("/healthz/ready", s.serveReady)
	admin.HandleFunc("/debug/pprof/", pprof.Index)
	admin.HandleFunc("/debug/pprof/profile", pprof.Profile)
	admin.HandleFunc("/debug/pprof/trace", pprof.Trace)
	metrics := http.NewServeMux()
	for _, p := range cfg.MetricsPaths {
		metrics.Handle(p, promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	}
	ready := http.NewServeMux()
	ready.HandleFunc("/healthz/ready", s.serveReady)
	for _, e := range []struct {
		addr string
		h    http.Handler
	}{{cfg.AdminAddr, admin}, {cfg.MetricsAddr, metrics}, {cfg.ReadyAddr, ready}} {
		ln, err := net.Listen("tcp", e.addr)
		if err != nil {
			s.Stop()
			return nil, fmt.Errorf("listen %s: %w", e.addr, err)
		}
		srv := &http.Server{Handler: e.h, ReadHeaderTimeout: 10 * time.Second}
		s.servers = append(s.servers, srv)
		s.addrs = append(s.addrs, ln.Addr())
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			_ = srv.Serve(ln)
		}()
	}
	return s, nil
}

// AdminAddr, MetricsAddr and ReadyAddr are where the endpoints listen
// (useful with port 0); nil on a nil Servers.
func (s *Servers) AdminAddr() net.Addr   { return s.addr(0) }
func (s *Servers) MetricsAddr() net.Addr { return s.addr(1) }
func (s *Servers) ReadyAddr() net.Addr   { return s.addr(2) }

func (s *Servers) addr(i int) net.Addr {
	if s == nil || i >= len(s.addrs) {
		return nil
	}
	return s.addrs[i]
}

// Stop shuts the servers down (2 s grace each) and waits for them. It is
// safe on a nil Servers.
func (s *Servers) Stop() {
	if s == nil {
		return
	}
	for _, srv := range s.servers {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = srv.Shutdown(ctx)
		cancel()
	}
	s.wg.Wait()
}

func (s *Servers) serveReady(w http.ResponseWriter, _ *http.Request) {
	if why := s.cfg.NotReady(); why != "" {
		http.Error(w, why, http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

func (s *Servers) serveConfigDump(w http.ResponseWriter, _ *http.Request) {
	dump, err := s.cfg.ConfigDump()
	if err != nil {
		http.Error(w, "config dump failed", http.StatusInternalServerError)
		if s.cfg.OnDumpError != nil {
			s.cfg.OnDumpError(err)
		}
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(dump)
}
