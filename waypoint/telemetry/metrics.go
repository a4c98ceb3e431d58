// Package telemetry records what the waypoint does: Istio's standard
// request and TCP metrics (reporter "waypoint"), JSON access log lines with
// Envoy response flags, and W3C trace context propagation (a new span id
// per request, the caller's trace id kept).
package telemetry

import (
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Peer describes one side of a request for metric labels.
type Peer struct {
	Workload, Namespace, Principal, App, Version string
	CanonicalService, CanonicalRevision, Cluster string
}

// Request is everything recorded about one HTTP request.
type Request struct {
	Source, Destination Peer
	// DestinationService is the FQDN; DestinationServiceName and
	// DestinationServiceNamespace its parts.
	DestinationService, DestinationServiceName, DestinationServiceNamespace string
	Protocol                                                                string // "http" or "grpc"
	Code                                                                    int
	GRPCStatus                                                              string
	Flags                                                                   string // Envoy response flags, "-" for none
	Duration                                                                time.Duration
	RequestBytes, ResponseBytes                                             int64
}

// Metrics are Istio's standard metrics.
type Metrics struct {
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	reqBytes    *prometheus.HistogramVec
	respBytes   *prometheus.HistogramVec
	tcpOpened   *prometheus.CounterVec
	tcpClosed   *prometheus.CounterVec
	tcpSent     *prometheus.CounterVec
	tcpReceived *prometheus.CounterVec

	// series caches the four request series of each label set, so a
	// request costs one map lookup instead of four label hashes.
	seriesMu sync.RWMutex // guards series
	series   map[requestLabelValues]*requestSeries
}

// requestLabelValues are the values of requestLabels, in order.
type requestLabelValues [len(requestLabels)]string

// requestSeries are one label set's request metrics.
type requestSeries struct {
	requests                      prometheus.Counter
	duration, reqBytes, respBytes prometheus.Observer
}

var requestLabels = [...]string{
	"reporter",
	"source_workload", "source_workload_namespace", "source_principal", "source_app", "source_version",
	"source_canonical_service", "source_canonical_revision", "source_cluster",
	"destination_workload", "destination_workload_namespace", "destination_principal", "destination_app", "destination_version",
	"destination_service", "destination_service_name", "destination_service_namespace",
	"destination_canonical_service", "destination_canonical_revision", "destination_cluster",
	"request_protocol", "response_code", "grpc_response_status", "response_flags", "connection_security_policy",
}

var tcpLabels = []string{
	"reporter",
	"source_workload", "source_workload_namespace", "source_principal", "source_app", "source_version",
	"source_canonical_service", "source_canonical_revision", "source_cluster",
	"destination_workload", "destination_workload_namespace", "destination_principal", "destination_app", "destination_version",
	"destination_service", "destination_service_name", "destination_service_namespace",
	"destination_canonical_service", "destination_canonical_revision", "destination_cluster",
	"request_protocol", "response_flags", "connection_security_policy",
}

// NewMetrics registers the metrics on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	durationBuckets := []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}
	sizeBuckets := prometheus.ExponentialBuckets(1, 10, 9)
	m := &Metrics{
		requests:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_requests_total", Help: "Requests handled."}, requestLabels[:]),
		duration:    prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "istio_request_duration_milliseconds", Help: "Request duration.", Buckets: durationBuckets}, requestLabels[:]),
		reqBytes:    prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "istio_request_bytes", Help: "Request body sizes.", Buckets: sizeBuckets}, requestLabels[:]),
		respBytes:   prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "istio_response_bytes", Help: "Response body sizes.", Buckets: sizeBuckets}, requestLabels[:]),
		tcpOpened:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_tcp_connections_opened_total", Help: "TCP connections opened."}, tcpLabels),
		tcpClosed:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_tcp_connections_closed_total", Help: "TCP connections closed."}, tcpLabels),
		tcpSent:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_tcp_sent_bytes_total", Help: "Bytes sent to the client."}, tcpLabels),
		tcpReceived: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "istio_tcp_received_bytes_total", Help: "Bytes received from the client."}, tcpLabels),
		series:      map[requestLabelValues]*requestSeries{},
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.reqBytes, m.respBytes, m.tcpOpened, m.tcpClosed, m.tcpSent, m.tcpReceived} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("telemetry: register metric: %w", err)
		}
	}
	return m, nil
}

func or(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func sourceLabels(dst []string, p Peer) []string {
	return append(dst, or(p.Workload), or(p.Namespace), or(p.Principal), or(p.App), or(p.Version),
		or(p.CanonicalService), or(p.CanonicalRevision), or(p.Cluster))
}

// destinationLabels appends the destination workload, service and
// canonical labels in requestLabels order.
func destinationLabels(dst []string, p Peer, svc, name, ns string) []string {
	return append(dst, or(p.Workload), or(p.Namespace), or(p.Principal), or(p.App), or(p.Version),
		or(svc), or(name), or(ns), or(p.CanonicalService), or(p.CanonicalRevision), or(p.Cluster))
}

// RecordRequest records one HTTP request.
func (m *Metrics) RecordRequest(r *Request) {
	if m == nil {
		return
	}
	var lv requestLabelValues
	l := append(lv[:0], "waypoint")
	l = sourceLabels(l, r.Source)
	l = destinationLabels(l, r.Destination, r.DestinationService, r.DestinationServiceName, r.DestinationServiceNamespace)
	grpc := r.GRPCStatus
	if grpc == "" {
		grpc = "-"
	}
	flags := r.Flags
	if flags == "" {
		flags = "-"
	}
	if l = append(l, r.Protocol, codeString(r.Code), grpc, flags, "mutual_tls"); len(l) != len(lv) || &l[0] != &lv[0] {
		panic("telemetry: request label values do not match requestLabels")
	}
	s := m.requestSeries(&lv)
	s.requests.Inc()
	s.duration.Observe(float64(r.Duration) / float64(time.Millisecond))
	s.reqBytes.Observe(float64(r.RequestBytes))
	s.respBytes.Observe(float64(r.ResponseBytes))
}

// requestSeries returns lv's series, creating them on first use.
func (m *Metrics) requestSeries(lv *requestLabelValues) *requestSeries {
	m.seriesMu.RLock()
	s := m.series[*lv]
	m.seriesMu.RUnlock()
	if s != nil {
		return s
	}
	l := lv[:]
	s = &requestSeries{requests: m.requests.WithLabelValues(l...), duration: m.duration.WithLabelValues(l...),
		reqBytes: m.reqBytes.WithLabelValues(l...), respBytes: m.respBytes.WithLabelValues(l...)}
	m.seriesMu.Lock()
	if prev := m.series[*lv]; prev != nil {
		s = prev
	} else {
		m.series[*lv] = s
	}
	m.seriesMu.Unlock()
	return s
}

// codeString formats an HTTP status without allocating for the usual ones.
func codeString(code int) string {
	if code >= 100 && code < 600 {
		return statusStrings[code-100]
	}
	return strconv.Itoa(code)
}

var statusStrings = func() (s [500]string) {
	for i := range s {
		s[i] = strconv.Itoa(100 + i)
	}
	return s
}()

// TCP is one proxied TCP connection.
type TCP struct {
	Source, Destination                                                     Peer
	DestinationService, DestinationServiceName, DestinationServiceNamespace string
	Flags                                                                   string
}

func (m *Metrics) tcpLabelValues(t *TCP) []string {
	l := make([]string, 0, len(tcpLabels))
	l = append(l, "waypoint")
	l = sourceLabels(l, t.Source)
	l = destinationLabels(l, t.Destination, t.DestinationService, t.DestinationServiceName, t.DestinationServiceNamespace)
	flags := t.Flags
	if flags == "" {
		flags = "-"
	}
	return append(l, "tcp", flags, "mutual_tls")
}

// TCPOpened counts an opened connection.
func (m *Metrics) TCPOpened(t *TCP) {
	if m != nil {
		m.tcpOpened.WithLabelValues(m.tcpLabelValues(t)...).Inc()
	}
}

// TCPClosed counts a closed connection and its bytes.
func (m *Metrics) TCPClosed(t *TCP, sent, received int64) {
	if m == nil {
		return
	}
	l := m.tcpLabelValues(t)
	m.tcpClosed.WithLabelValues(l...).Inc()
	m.tcpSent.WithLabelValues(l...).Add(float64(sent))
	m.tcpReceived.WithLabelValues(l...).Add(float64(received))
}
