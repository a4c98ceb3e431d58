package proxy

import (
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/zmesh/zmesh/pkg/hbone"
	"github.com/zmesh/zmesh/waypoint/config"
	"github.com/zmesh/zmesh/waypoint/route"
	"github.com/zmesh/zmesh/waypoint/telemetry"
	"github.com/zmesh/zmesh/waypoint/upstream"
)

// Config configures a Proxy.
type Config struct {
	// Store supplies the configuration, read once per request. Required.
	Store *config.Store
	// Upstreams holds cluster runtime state and dials endpoints. Required.
	Upstreams *upstream.Manager
	// Metrics, AccessLog and Tracer may be nil.
	Metrics *telemetry.Metrics
	// AccessLog, when set, logs every request and connection (the mesh's
	// access log file); ListenerLogs then go unused.
	AccessLog *telemetry.AccessLog
	// ListenerLogs, by path (config.AccessLogStdout, ...), log the requests
	// and connections of the listeners whose access_log names that path.
	ListenerLogs map[string]*telemetry.AccessLog
	Tracer       *telemetry.Exporter
	// SamplePPM is the sampling rate, per million, of traces this waypoint
	// starts; a caller's sampling decision is always kept.
	SamplePPM uint32
	// MaxBufferedBody bounds the request body buffered for retries and
	// mirroring (default 1 MiB); larger bodies are streamed once.
	MaxBufferedBody int64
	// BufferPool backs TCP splicing; nil allocates.
	BufferPool *hbone.BufferPool
	Logger     *slog.Logger
}

// Proxy serves HTTP requests and TCP tunnels. Safe for concurrent use.
type Proxy struct {
	cfg Config
	log *slog.Logger

	mirrors  chan struct{} // bounds in-flight mirrored requests
	backends backends      // resolved backends of the current snapshot
	wg       sync.WaitGroup
}

// New validates cfg.
func New(cfg Config) (*Proxy, error) {
	if cfg.Store == nil || cfg.Upstreams == nil {
		return nil, errors.New("proxy: Store and Upstreams are required")
	}
	if cfg.MaxBufferedBody == 0 {
		cfg.MaxBufferedBody = 1 << 20
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Proxy{cfg: cfg, log: log, mirrors: make(chan struct{}, 64)}, nil
}

// accessLogFor returns the log of a chain whose access log path is path,
// nil when its requests are not logged.
func (p *Proxy) accessLogFor(path string) *telemetry.AccessLog {
	if p.cfg.AccessLog != nil || path == "" {
		return p.cfg.AccessLog
	}
	return p.cfg.ListenerLogs[path]
}

// Wait waits for background work (mirrored requests) to finish.
func (p *Proxy) Wait() { p.wg.Wait() }

// state is one request's bookkeeping.
type state struct {
	start    time.Time
	snap     *config.Snapshot
	down     *Downstream
	span     telemetry.Span
	route    *route.Route
	flags    []string
	cluster  string
	upHost   *config.Workload
	upAddr   string
	reqBytes int64
	protocol string // "http" or "grpc"
	grpc     string
	// accessLog is the access log path of the chain serving the request.
	accessLog string
}

// exchange holds a request's state and its wrappers of the response and
// the request body, allocated together once per request.
type exchange struct {
	st   state
	rw   responseWriter
	body countingBody
}

func (s *state) flag(f string) {
	for _, x := range s.flags {
		if x == f {
			return
		}
	}
	s.flags = append(s.flags, f)
}

// ServeHTTP handles one request from a tunnel. The request context must
// carry a Downstream.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	x := &exchange{
		st:   state{start: time.Now(), snap: p.cfg.Store.Snapshot(), down: DownstreamFrom(r.Context()), protocol: "http"},
		rw:   responseWriter{w: w},
		body: countingBody{rc: r.Body},
	}
	st, rw, body := &x.st, &x.rw, &x.body
	if st.down == nil {
		st.down = &Downstream{}
	}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		st.protocol = "grpc"
	}
	r.Body = body
	st.span = telemetry.StartSpan(r.Header, p.cfg.SamplePPM)
	if r.Header.Get("X-Request-Id") == "" {
		r.Header.Set("X-Request-Id", newRequestID())
	}
	defer func() {
		st.reqBytes = body.n
		p.record(r, rw, st)
	}()
	p.serve(rw, r, st)
}

func (p *Proxy) serve(w *responseWriter, r *http.Request, st *state) {
	chain := p.chainFor(st)
	st.accessLog = chain.AccessLog
	rt := chain.Routes.Match(r)
	if rt == nil {
		st.flag("NR")
		p.respondError(w, st, http.StatusNotFound, "")
		return
	}
	st.route = rt
	faultCfg, ok := p.runFilters(w, r, st, chain, rt)
	if !ok {
		return
	}
	if faultCfg != nil {
		d := faultCfg.Decide()
		if d.Delay > 0 {
			st.flag("DI")
			t := time.NewTimer(d.Delay)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				st.flag("DC")
				return
			}
		}
		if d.AbortStatus != 0 {
			st.flag("FI")
			p.respondError(w, st, d.AbortStatus, d.AbortBody)
			return
		}
	}
	switch {
	case rt.Direct != nil:
		p.applyResponseHeaders(w.Header(), chain, rt, nil)
		if rt.Direct.Body != "" {
			w.Header().Set("Content-Type", "text/plain")
		}
		w.WriteHeader(rt.Direct.Status)
		_, _ = w.Write([]byte(rt.Direct.Body))
	case rt.Redirect != nil:
		p.applyResponseHeaders(w.Header(), chain, rt, nil)
		w.Header().Set("Location", rt.Redirect.Location(r, rt))
		w.WriteHeader(rt.Redirect.Code)
	default:
		p.forward(w, r, st, chain, rt)
	}
}

// defaultRoutes routes everything to the target's own endpoints.
var defaultRoutes = func() *route.Table {
	t, err := route.DefaultTable()
	if err != nil {
		panic(err)
	}
	return t
}()

// refusedChain answers every request with 503: the service's listener was
// rejected and has no good version.
var refusedChain = &config.HTTPChain{Routes: &route.Table{Name: "refused", Routes: []*route.Route{route.DirectRoute("refused", http.StatusServiceUnavailable, "no healthy upstream")}}}

// chainFor returns the HTTP chain for the request's target: its
// Listener's, or a default route to the service (or workload) itself.
func (p *Proxy) chainFor(st *state) *config.HTTPChain {
	if svc := st.down.Service; svc != nil {
		if l := st.snap.Listener(svc, st.down.Port.Port); l != nil && l.HTTP != nil {
			return l.HTTP
		}
		if st.snap.Refused(svc, st.down.Port.Port) {
			return refusedChain
		}
	}
	return defaultChain
}

// defaultChain routes everything to the target itself, with no filters.
var defaultChain = &config.HTTPChain{Routes: defaultRoutes}

func (p *Proxy) applyResponseHeaders(h http.Header, chain *config.HTTPChain, rt *route.Route, wc *route.WeightedCluster) {
	if wc != nil {
		wc.Headers.ApplyResponse(h)
	}
	rt.Headers.ApplyResponse(h)
	chain.Routes.Headers.ApplyResponse(h)
}

// newRequestID returns a random UUID-shaped id (version nibble 4).
func newRequestID() string {
	const hexd = "0123456789abcdef"
	var b [36]byte
	r, bits := rand.Uint64(), 64
	for i := range b {
		switch i {
		case 8, 13, 18, 23:
			b[i] = '-'
		default:
			if bits < 4 {
				r, bits = rand.Uint64(), 64
			}
			b[i] = hexd[r&0xf]
			r >>= 4
			bits -= 4
		}
	}
	b[14] = '4'
	return string(b[:])
}
