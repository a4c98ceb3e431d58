package ca

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics counts certificate requests, using Istio's metric names.
type metrics struct {
	csr        prometheus.Counter
	success    prometheus.Counter
	parseErr   prometheus.Counter
	authnErr   prometheus.Counter
	signErrors prometheus.Counter
}

// newMetrics creates the counters and registers them, with gauges of the
// authority's current root and chain expiry, on reg (not registered when
// reg is nil).
func newMetrics(reg prometheus.Registerer, a *Authority) (*metrics, error) {
	m := &metrics{
		csr: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "citadel_server_csr_count",
			Help: "Certificate signing requests received.",
		}),
		success: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "citadel_server_success_cert_issuance_count",
			Help: "Certificates issued.",
		}),
		parseErr: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "citadel_server_csr_parsing_err_count",
			Help: "Requests refused because the CSR could not be parsed or was unacceptable.",
		}),
		authnErr: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "citadel_server_authentication_failure_count",
			Help: "Requests refused because the caller could not be authenticated or was not authorized for the identity.",
		}),
		signErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "citadel_server_csr_sign_err_count",
			Help: "Requests that failed while signing the certificate.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	expiry := func(name, help string, notAfter func(*SigningMaterial) time.Time) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
			return float64(notAfter(a.Material()).Unix())
		})
	}
	cs := []prometheus.Collector{m.csr, m.success, m.parseErr, m.authnErr, m.signErrors}
	if a != nil {
		cs = append(cs,
			expiry("citadel_server_root_cert_expiry_timestamp", "Unix time the CA's root certificate expires.",
				func(s *SigningMaterial) time.Time { return s.Root.NotAfter }),
			expiry("citadel_server_cert_chain_expiry_timestamp", "Unix time the first certificate of the CA's signing chain expires.",
				(*SigningMaterial).NotAfter))
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("ca: register metrics: %w", err)
		}
	}
	return m, nil
}
