package app

import (
	"net"

	"github.com/zmesh/zmesh/pkg/proxyadmin"
)

// startHTTP serves the admin (config dump, pprof), metrics and readiness
// endpoints on their own listeners. Readiness is 200 once both xDS types
// are applied and the node agent's snapshot has been received.
func (a *App) startHTTP() error {
	s, err := proxyadmin.Start(proxyadmin.Config{
		AdminAddr:    a.cfg.AdminAddr,
		MetricsAddr:  a.cfg.MetricsAddr,
		ReadyAddr:    a.cfg.ReadyAddr,
		Gatherer:     a.registry,
		MetricsPaths: []string{"/metrics"},
		ConfigDump:   a.configDump,
		NotReady:     a.notReady,
		OnDumpError:  func(err error) { a.log.Error("config dump failed", "err", err) },
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
	dump, err := a.state.ConfigDump()
	if err != nil {
		return nil, err
	}
	return struct {
		State        any `json:"state"`
		Certificates any `json:"certificates"`
		Pods         int `json:"pods"`
	}{dump, a.identities.Snapshot(), a.pods.count()}, nil
}
