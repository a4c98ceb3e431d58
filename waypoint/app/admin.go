package app

import (
	"net"

	"github.com/zmesh/zmesh/pkg/proxyadmin"
)

// startHTTP serves the admin (config dump, pprof), metrics and readiness
// endpoints on their own listeners.
func (a *App) startHTTP() error {
	s, err := proxyadmin.Start(proxyadmin.Config{
		AdminAddr:    a.cfg.AdminAddr,
		MetricsAddr:  a.cfg.MetricsAddr,
		ReadyAddr:    a.cfg.ReadyAddr,
		Gatherer:     a.registry,
		MetricsPaths: []string{"/metrics", "/stats/prometheus"},
		ConfigDump:   a.configDump,
		NotReady:     a.notReady,
	})
	if err != nil {
		return err
	}
	a.http = s
	return nil
}

// AdminAddr, MetricsAddr and ReadyAddr are where the HTTP endpoints listen
// (useful with port 0); nil before Start.
func (a *App) AdminAddr() net.Addr   { return a.http.AdminAddr() }
func (a *App) MetricsAddr() net.Addr { return a.http.MetricsAddr() }
func (a *App) ReadyAddr() net.Addr   { return a.http.ReadyAddr() }

func (a *App) configDump() (any, error) {
	return struct {
		Config      any `json:"config"`
		Certificate any `json:"certificate"`
		Pool        any `json:"hbone_pool"`
	}{a.store.Dump(), a.ident.status(), a.pool.Stats()}, nil
}
