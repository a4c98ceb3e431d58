package proxy

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/zmesh/zmesh/waypoint/config"
	"github.com/zmesh/zmesh/waypoint/telemetry"
)

// responseWriter records the status and body size and supports flushing.
type responseWriter struct {
	w     http.ResponseWriter
	code  int
	bytes int64
}

func (rw *responseWriter) Header() http.Header { return rw.w.Header() }

func (rw *responseWriter) WriteHeader(code int) {
	if rw.code == 0 {
		rw.code = code
		rw.w.WriteHeader(code)
	}
}

func (rw *responseWriter) Write(b []byte) (int, error) {
	if rw.code == 0 {
		rw.WriteHeader(http.StatusOK)
	}
	n, err := rw.w.Write(b)
	rw.bytes += int64(n)
	return n, err
}

// Flush sends buffered data to the client.
func (rw *responseWriter) Flush() { _ = http.NewResponseController(rw.w).Flush() }

// countingBody counts request body bytes read.
type countingBody struct {
	rc io.ReadCloser
	n  int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.n += int64(n)
	return n, err
}

func (b *countingBody) Close() error { return b.rc.Close() }

// respondError answers with a locally generated status and a plain-text
// body that carries no internal detail.
func (p *Proxy) respondError(w *responseWriter, st *state, code int, body string) {
	h := w.Header()
	for k := range h {
		if k != "Www-Authenticate" {
			delete(h, k)
		}
	}
	if body != "" {
		h.Set("Content-Type", "text/plain")
	}
	if st.protocol == "grpc" {
		h.Set("Content-Type", "application/grpc")
		h.Set("Grpc-Status", grpcStatusFor(code))
		h.Set("Grpc-Message", body)
		st.grpc = h.Get("Grpc-Status")
		w.WriteHeader(http.StatusOK)
		return
	}
	w.WriteHeader(code)
	if body != "" {
		_, _ = io.WriteString(w, body)
	}
}

// grpcStatusFor maps an HTTP status to a gRPC code as Envoy does.
func grpcStatusFor(code int) string {
	switch code {
	case 400:
		return "13"
	case 401:
		return "16"
	case 403:
		return "7"
	case 404:
		return "12"
	case 429, 502, 503, 504:
		return "14"
	}
	return "2"
}

// record emits the request's metrics and access log line.
func (p *Proxy) record(r *http.Request, w *responseWriter, st *state) {
	code := w.code
	if code == 0 {
		code = http.StatusOK
		if st.has("DC") {
			code = 0
		}
	}
	flags := strings.Join(st.flags, ",")
	dur := time.Since(st.start)
	m := &telemetry.Request{Source: sourcePeer(st.down), Destination: workloadPeer(st.upHost),
		Protocol: st.protocol, Code: code, GRPCStatus: st.grpc, Flags: flags, Duration: dur,
		RequestBytes: st.reqBytes, ResponseBytes: w.bytes}
	if svc := st.down.Service; svc != nil {
		m.DestinationService, m.DestinationServiceName, m.DestinationServiceNamespace = svc.Hostname, svc.Name, svc.Namespace
	}
	p.cfg.Metrics.RecordRequest(m)
	if p.cfg.Tracer != nil {
		name := r.Host + r.URL.Path
		if m.DestinationService != "" {
			name = m.DestinationService + ":" + strconv.Itoa(int(st.down.Port.Port)) + "/*"
		}
		p.cfg.Tracer.Export(telemetry.SpanRecord{Span: st.span, Name: name, Start: st.start, End: st.start.Add(dur), Error: code >= 500,
			Attributes: map[string]string{"http.method": r.Method, "http.url": "http://" + r.Host + r.URL.RequestURI(), "http.status_code": strconv.Itoa(code),
				"upstream_cluster": st.cluster, "response_flags": orDash(flags), "request_id": r.Header.Get("X-Request-Id"),
				"istio.canonical_service": m.Destination.CanonicalService, "peer.address": st.down.Source.String()}})
	}
	if log := p.accessLogFor(st.accessLog); log != nil {
		e := &telemetry.Entry{Start: st.start, Method: r.Method, Path: r.URL.RequestURI(), Protocol: r.Proto, Authority: r.Host,
			UserAgent: r.UserAgent(), RequestID: r.Header.Get("X-Request-Id"), Code: code, Flags: flags, Duration: dur,
			BytesReceived: st.reqBytes, BytesSent: w.bytes, UpstreamCluster: st.cluster, UpstreamHost: st.upAddr,
			SourceAddress: st.down.Source.String(), DestinationService: m.DestinationService, TraceID: st.span.TraceIDString()}
		if !st.down.PeerID.IsZero() {
			e.SourcePrincipal = st.down.PeerID.String()
		}
		if st.route != nil {
			e.RouteName = st.route.Name
		}
		log.Log(e)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func sourcePeer(d *Downstream) telemetry.Peer {
	p := workloadPeer(d.SourceWorkload)
	if !d.PeerID.IsZero() {
		p.Principal = d.PeerID.String()
		if p.Namespace == "" {
			// spiffe://td/ns/<ns>/sa/<sa>
			parts := strings.Split(d.PeerID.Path(), "/")
			if len(parts) == 5 && parts[1] == "ns" {
				p.Namespace = parts[2]
			}
		}
	}
	return p
}

func workloadPeer(w *config.Workload) telemetry.Peer {
	if w == nil {
		return telemetry.Peer{}
	}
	p := telemetry.Peer{Workload: w.WorkloadName, Namespace: w.Namespace, App: w.CanonicalName, Version: w.CanonicalRevision,
		CanonicalService: w.CanonicalName, CanonicalRevision: w.CanonicalRevision, Cluster: w.ClusterID}
	if p.Workload == "" {
		p.Workload = w.Name
	}
	if !w.Identity.IsZero() {
		p.Principal = w.Identity.String()
	}
	return p
}
