package ca

import (
	"fmt"

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

// newMetrics creates the counters and registers them on reg (not registered
// when reg is nil).
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
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
	for _, c := range []prometheus.Collector{m.csr, m.success, m.parseErr, m.authnErr, m.signErrors} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("ca: register metrics: %w", err)
		}
	}
	return m, nil
}
