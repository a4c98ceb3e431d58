package xdsserver

import (
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's Prometheus collectors. Names follow istiod's so
// existing dashboards work: pilot_xds (connected streams),
// pilot_xds_pushes and pilot_total_xds_rejects, both labelled by type (the
// type URL without its "type.googleapis.com/" prefix).
type metrics struct {
	connected prometheus.Gauge
	pushes    *prometheus.CounterVec
	rejects   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pilot_xds",
			Help: "Number of delta xDS streams currently connected.",
		}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pilot_xds_pushes",
			Help: "Delta xDS responses sent, by resource type.",
		}, []string{"type"}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pilot_total_xds_rejects",
			Help: "Delta xDS responses rejected (NACKed) by clients, by resource type.",
		}, []string{"type"}),
	}
	for _, c := range []prometheus.Collector{m.connected, m.pushes, m.rejects} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering xds server metrics: %w", err)
		}
	}
	return m, nil
}

// typeLabel is the metric label for a type URL.
func typeLabel(typeURL string) string {
	return strings.TrimPrefix(typeURL, typeURLPrefix)
}
