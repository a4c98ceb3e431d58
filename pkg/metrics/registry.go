// Package metrics holds what every zmesh process shares for Prometheus.
package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// NewRegistry returns a registry holding the Go runtime and process
// collectors; each component registers its own metrics on it.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// NewHandshakeFailures registers zmesh_hbone_handshake_failures_total, the
// count of HBONE connections whose TLS handshake failed (Istio has no
// metric for it): feed it from hbone.ServerConfig.HandshakeFailed.
func NewHandshakeFailures(reg prometheus.Registerer) (prometheus.Counter, error) {
	c := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "zmesh_hbone_handshake_failures_total",
		Help: "HBONE connections refused in the TLS handshake: untrusted, expired or foreign peer certificates, timeouts, non-HBONE clients.",
	})
	if err := reg.Register(c); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return c, nil
}
