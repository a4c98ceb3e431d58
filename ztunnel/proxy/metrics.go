package proxy

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/zmesh/zmesh/pkg/metrics"
)

// Metrics holds Istio's TCP metrics, with Istio's names and labels, and
// the count of failed inbound HBONE handshakes.
type Metrics struct {
	opened, closed, received, sent *prometheus.CounterVec
	handshakeFailures              prometheus.Counter
}

var tcpLabels = []string{
	"reporter",
	"source_workload", "source_workload_namespace", "source_principal",
	"destination_workload", "destination_workload_namespace", "destination_principal",
	"destination_service",
	"request_protocol", "response_flags", "connection_security_policy",
}

// NewMetrics creates the counters and registers them on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		opened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_tcp_connections_opened_total", Help: "Total TCP connections opened.",
		}, tcpLabels),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_tcp_connections_closed_total", Help: "Total TCP connections closed.",
		}, tcpLabels),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_tcp_received_bytes_total", Help: "Bytes received from the connection's source.",
		}, tcpLabels),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "istio_tcp_sent_bytes_total", Help: "Bytes sent to the connection's source.",
		}, tcpLabels),
	}
	for _, c := range []prometheus.Collector{m.opened, m.closed, m.received, m.sent} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("proxy metrics: %w", err)
		}
	}
	var err error
	if m.handshakeFailures, err = metrics.NewHandshakeFailures(reg); err != nil {
		return nil, fmt.Errorf("proxy metrics: %w", err)
	}
	return m, nil
}

// Reporters.
const (
	reporterSource      = "source"
	reporterDestination = "destination"
)

// Response flags (Envoy's, as Istio reports them).
const (
	flagNone            = "-"
	flagUpstreamFailure = "UF"   // upstream connection failure
	flagUnauthorized    = "UAEX" // denied by authorization
	flagNoRoute         = "NR"   // no route to the destination
)

// connLabels are one connection's metric labels.
type connLabels struct {
	reporter string
	src, dst Peer
	service  string
	security string // "mutual_tls" or "none"
}

func (l connLabels) values(flags string) []string {
	return []string{
		l.reporter,
		orUnknown(l.src.Workload), orUnknown(l.src.Namespace), orUnknown(l.src.Principal),
		orUnknown(l.dst.Workload), orUnknown(l.dst.Namespace), orUnknown(l.dst.Principal),
		orUnknown(l.service),
		"tcp", flags, l.security,
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// open counts a connection that reached its destination.
func (m *Metrics) open(l connLabels) {
	if m != nil {
		m.opened.WithLabelValues(l.values(flagNone)...).Inc()
	}
}

// close counts a finished connection and its bytes. fromSource is what the
// source sent, toSource what it received.
func (m *Metrics) close(l connLabels, flags string, fromSource, toSource int64) {
	if m == nil {
		return
	}
	v := l.values(flags)
	m.closed.WithLabelValues(v...).Inc()
	m.received.WithLabelValues(v...).Add(float64(fromSource))
	m.sent.WithLabelValues(v...).Add(float64(toSource))
}

// handshakeFailed counts an inbound HBONE connection refused in its TLS
// handshake. A nil m counts nothing.
func (m *Metrics) handshakeFailed(error) {
	if m != nil {
		m.handshakeFailures.Inc()
	}
}
