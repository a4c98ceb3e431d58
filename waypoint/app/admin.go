package app

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// startHTTP serves the admin (config dump, pprof), metrics and readiness
// endpoints on their own listeners.
func (a *App) startHTTP() error {
	admin := http.NewServeMux()
	admin.HandleFunc("/config_dump", a.serveConfigDump)
	admin.HandleFunc("/debug/config_dump", a.serveConfigDump)
	admin.HandleFunc("/healthz/ready", a.serveReady)
	admin.HandleFunc("/debug/pprof/", pprof.Index)
	admin.HandleFunc("/debug/pprof/profile", pprof.Profile)
	metrics := http.NewServeMux()
	metrics.Handle("/metrics", promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{}))
	metrics.Handle("/stats/prometheus", promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{}))
	ready := http.NewServeMux()
	ready.HandleFunc("/healthz/ready", a.serveReady)
	for _, s := range []struct {
		addr string
		h    http.Handler
	}{{a.cfg.AdminAddr, admin}, {a.cfg.MetricsAddr, metrics}, {a.cfg.ReadyAddr, ready}} {
		ln, err := net.Listen("tcp", s.addr)
		if err != nil {
			return fmt.Errorf("listen %s: %w", s.addr, err)
		}
		srv := &http.Server{Handler: s.h, ReadHeaderTimeout: 10e9}
		a.servers = append(a.servers, srv)
		a.httpAddrs = append(a.httpAddrs, ln.Addr())
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			_ = srv.Serve(ln)
		}()
	}
	return nil
}

// AdminAddr, MetricsAddr and ReadyAddr are where the HTTP endpoints listen
// (useful with port 0); nil before Start.
func (a *App) AdminAddr() net.Addr   { return a.httpAddr(0) }
func (a *App) MetricsAddr() net.Addr { return a.httpAddr(1) }
func (a *App) ReadyAddr() net.Addr   { return a.httpAddr(2) }

func (a *App) httpAddr(i int) net.Addr {
	if i < len(a.httpAddrs) {
		return a.httpAddrs[i]
	}
	return nil
}

func (a *App) serveReady(w http.ResponseWriter, _ *http.Request) {
	if why := a.notReady(); why != "" {
		http.Error(w, why, http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

func (a *App) serveConfigDump(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(struct {
		Config      any `json:"config"`
		Certificate any `json:"certificate"`
		Pool        any `json:"hbone_pool"`
	}{a.store.Dump(), a.ident.status(), a.pool.Stats()})
}
