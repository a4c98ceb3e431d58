package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/zmesh/zmesh/waypoint/config"
	"github.com/zmesh/zmesh/waypoint/route"
	"github.com/zmesh/zmesh/waypoint/upstream"
)

// Envoy-compatible error bodies: informative to a client, nothing internal.
const (
	bodyConnectFailure = "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
	bodyReset          = "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
	bodyOverflow       = "upstream connect error or disconnect/reset before headers. reset reason: overflow"
	bodyNoHealthy      = "no healthy upstream"
	bodyTimeout        = "upstream request timeout"
)

// hopHeaders are connection-scoped and never forwarded.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// backend is a resolved cluster for one request.
type backend struct {
	name    string
	cluster *upstream.Cluster
	targets []upstream.Target
	byAddr  map[string]*config.Workload
	// http2 is the upstream protocol: HTTP/2 when the service port says so.
	http2 bool
}

// resolve finds the cluster's endpoints: the inline load assignment, or
// the service's healthy workloads. ok=false means the cluster does not
// exist. The result is cached for the request's snapshot; callers must
// not modify it.
func (p *Proxy) resolve(st *state, name string) (*backend, bool) {
	return p.backends.get(st, name, func() (*backend, bool) { return p.resolveUncached(st, name) })
}

func (p *Proxy) resolveUncached(st *state, name string) (*backend, bool) {
	snap := st.snap
	var cfg *upstream.ClusterConfig
	if name == route.DefaultCluster {
		cfg = defaultClusterConfig(st.down)
	} else if cfg = snap.Cluster(name); cfg == nil {
		return nil, false
	}
	b := &backend{name: cfg.Name, byAddr: map[string]*config.Workload{}}
	if name == route.DefaultCluster {
		// Implicit clusters keep their own runtime state, apart from a
		// configured cluster that may carry the same Istio name.
		implicit := *cfg
		implicit.Name = DefaultClusterPrefix + cfg.Name
		b.cluster = p.cfg.Upstreams.Cluster(&implicit)
	} else {
		b.cluster = p.cfg.Upstreams.Cluster(cfg)
	}
	var svc *config.Service
	port := cfg.Port
	switch {
	case name == route.DefaultCluster:
		svc, port = st.down.Service, st.down.Port.Port
	case cfg.Hostname != "":
		svc = snap.ServiceByHost("", cfg.Hostname)
	}
	b.http2 = st.down.Port.Protocol == config.HTTP2
	if svc != nil {
		if sp, ok := svc.Port(port); ok {
			b.http2 = sp.Protocol == config.HTTP2
		}
	}
	add := func(w *config.Workload, addr string, t upstream.Target) {
		if w == nil || w.Identity.IsZero() {
			return // unknown endpoint: its identity cannot be verified
		}
		b.targets = append(b.targets, t)
		b.byAddr[addr] = w
	}
	switch {
	case cfg.HasEndpoints:
		for _, ep := range cfg.Endpoints {
			if !ep.Healthy {
				continue
			}
			w := snap.WorkloadByIP(ep.Addr.Addr())
			if w == nil || !w.Healthy {
				continue
			}
			add(w, ep.Addr.String(), upstream.Target{Addr: ep.Addr, Identity: w.Identity})
		}
	case name == route.DefaultCluster && svc == nil && st.down.Workload != nil:
		w := st.down.Workload
		add(w, st.down.Authority.String(), upstream.Target{Addr: st.down.Authority, Identity: w.Identity})
	case svc != nil:
		for _, ep := range snap.ServiceEndpoints(svc, port) {
			add(ep.Workload, ep.Addr.String(), upstream.Target{Addr: ep.Addr, Identity: ep.Workload.Identity})
		}
	}
	return b, true
}

// DefaultClusterPrefix marks the runtime state of implicit clusters in the
// upstream manager.
const DefaultClusterPrefix = "default:"

// defaultClusterConfig is the implicit cluster of a target without a
// Listener (or of the default route): round robin, Envoy's defaults.
func defaultClusterConfig(d *Downstream) *upstream.ClusterConfig {
	name := "inbound-vip|" + d.Authority.String()
	if d.Service != nil {
		name = "outbound|" + strconv.Itoa(int(d.Port.Port)) + "||" + d.Service.Hostname
	}
	return &upstream.ClusterConfig{Name: name, MaxConnections: 1024, MaxPending: 1024, MaxRequests: 1024, MaxRetries: 3, ConnectTimeout: 10 * time.Second}
}

// forward sends the request to the route's backend and relays the answer.
func (p *Proxy) forward(w *responseWriter, r *http.Request, st *state, chain *config.HTTPChain, rt *route.Route) {
	fw := rt.Forward
	wc := fw.Pick(rand.Float64())
	b, ok := p.resolve(st, wc.Name)
	if !ok {
		st.cluster = wc.Name
		st.flag("NC")
		p.respondError(w, st, http.StatusInternalServerError, "")
		return
	}
	st.cluster = b.name
	// gRPC needs HTTP/2 upstream, and WebSocket HTTP/1.1, whatever the
	// port says. b is shared (cached per snapshot): change a copy.
	upgrade := isWebSocketUpgrade(r)
	if http2 := (b.http2 || r.ProtoMajor == 2 && st.protocol == "grpc") && !upgrade; http2 != b.http2 {
		cp := *b
		cp.http2 = http2
		b = &cp
	}
	ctx := r.Context()
	if fw.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, fw.Timeout)
		defer cancel()
	}

	// The hash is taken from the request as it came, before the route's
	// header changes (as Envoy's router does).
	hash, hasHash, setCookie := hashKey(r, st, fw)

	// out is a shallow copy with its own URL: it shares r's header, which
	// the proxy owns, so the changes below are what the access log sees,
	// as in Envoy. Its context carries the first attempt's record.
	first := &upstream.Attempt{}
	out := r.WithContext(upstream.WithAttempt(ctx, first))
	u := *r.URL
	out.URL = &u
	out.RequestURI = ""
	out.URL.Scheme = "http"
	upgradeTo, te := r.Header.Get("Upgrade"), r.Header.Get("Te")
	for _, h := range hopHeaders {
		delete(out.Header, h)
	}
	if upgrade {
		out.Header.Set("Connection", "Upgrade")
		out.Header.Set("Upgrade", upgradeTo)
	}
	if te == "trailers" {
		out.Header.Set("Te", "trailers")
	}

	if path, ok := rt.RewritePath(r.URL.EscapedPath()); ok {
		out.URL.RawPath = ""
		out.URL.Path = path
		if u, err := out.URL.Parse(path); err == nil {
			out.URL.Path, out.URL.RawPath = u.Path, u.RawPath
		}
	}
	if fw.HostRewrite != "" {
		out.Host = fw.HostRewrite
	}
	out.Header.Set("X-Forwarded-Proto", "http")
	wc.Headers.ApplyRequest(out.Header)
	rt.Headers.ApplyRequest(out.Header)
	chain.Routes.Headers.ApplyRequest(out.Header)

	// Buffer small bodies so retries and mirrors can replay them.
	var body []byte
	replayable := r.Body == http.NoBody || r.ContentLength == 0
	if !replayable && (fw.Retry != nil || len(fw.Mirrors) > 0) && r.ContentLength >= 0 && r.ContentLength <= p.cfg.MaxBufferedBody {
		var err error
		body, err = io.ReadAll(io.LimitReader(r.Body, p.cfg.MaxBufferedBody+1))
		if err != nil || int64(len(body)) > p.cfg.MaxBufferedBody {
			st.flag("DPE")
			p.respondError(w, st, http.StatusBadRequest, "")
			return
		}
		replayable = true
	}
	if body != nil {
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		out.Body, _ = out.GetBody()
	} else if replayable {
		out.Body, out.GetBody = http.NoBody, func() (io.ReadCloser, error) { return http.NoBody, nil }
	}

	for _, m := range fw.Mirrors {
		if replayable && !upgrade {
			p.mirror(st, out, m)
		}
	}

	resp := p.attempts(ctx, out, first, st, b, fw, hash, hasHash, replayable)
	if resp == nil {
		p.failUpstream(w, st, ctx)
		return
	}
	defer resp.Body.Close()
	h := w.Header()
	for k, vs := range resp.Header {
		h[k] = vs
	}
	for _, hh := range hopHeaders {
		h.Del(hh)
	}
	if setCookie != "" {
		h.Add("Set-Cookie", setCookie)
	}
	p.applyResponseHeaders(h, chain, rt, wc)
	if resp.StatusCode == http.StatusSwitchingProtocols && upgrade {
		p.switchProtocols(w, r, st, resp)
		return
	}
	// Trailers the upstream declared are declared downstream too; ones it
	// sent without declaring (gRPC servers do) are only known once the body
	// is read, and go out under http.TrailerPrefix.
	var declared map[string]bool
	if len(resp.Trailer) > 0 {
		declared = make(map[string]bool, len(resp.Trailer))
		for k := range resp.Trailer {
			h.Add("Trailer", k)
			declared[k] = true
		}
	}
	w.WriteHeader(resp.StatusCode)
	if err := copyBody(w, resp.Body, resp.ContentLength < 0); err != nil {
		st.flag("UPE")
	}
	for k, vs := range resp.Trailer {
		if declared[k] {
			h[k] = vs
		} else {
			h[http.TrailerPrefix+k] = vs
		}
		if k == "Grpc-Status" && len(vs) > 0 {
			st.grpc = vs[0]
		}
	}
	if st.grpc == "" {
		st.grpc = resp.Header.Get("Grpc-Status")
	}
}

// attempts runs the first try and the retries. It returns nil when no
// attempt produced a response to relay (the state's flags say why).
func (p *Proxy) attempts(ctx context.Context, out *http.Request, first *upstream.Attempt, st *state, b *backend, fw *route.Forward, hash uint64, hasHash, replayable bool) *http.Response {
	retries := 0
	if fw.Retry != nil && replayable {
		retries = fw.Retry.NumRetries
	}
	release, err := b.cluster.Acquire(b.http2)
	if err != nil {
		st.flag("UO")
		return nil
	}
	defer release()
	var prev *upstream.Host
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			rel, ok := b.cluster.AcquireRetry()
			if !ok {
				st.flag("UO")
				return nil
			}
			defer rel()
			backoff := time.Duration(25<<min(attempt-1, 4)) * time.Millisecond
			t := time.NewTimer(time.Duration(rand.Int64N(int64(backoff))) + time.Millisecond)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil
			}
			if out.GetBody != nil {
				out.Body, _ = out.GetBody()
			}
		}
		host, err := b.cluster.Pick(b.targets, hash, hasHash, prev)
		if err != nil {
			st.flag("UH")
			return nil
		}
		prev = host
		st.upAddr = host.Addr
		st.upHost = b.byAddr[st.upAddr]
		resp, cond := p.try(ctx, out, attempt, first, b, host, fw)
		last := attempt >= retries
		if resp != nil && (last || !retriable(fw.Retry, cond, resp.StatusCode)) {
			return resp
		}
		if resp != nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			_ = resp.Body.Close()
		}
		if resp == nil && (last || !retriable(fw.Retry, cond, 0)) {
			st.flag(cond)
			if attempt > 0 {
				st.flag("URX")
			}
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// try performs one attempt. Without a response, cond is the failure's
// response flag: UF (connect failure), UT (per-try timeout), UC (reset),
// or DC when the downstream went away (ctx cancelled): that is not held
// against the host.
//
// The first attempt without a per-try timeout sends out itself, whose
// context carries first. Any other gets a context and an Attempt of its
// own, so that a dial an earlier try left running cannot mark it.
func (p *Proxy) try(ctx context.Context, out *http.Request, attempt int, first *upstream.Attempt, b *backend, host *upstream.Host, fw *route.Forward) (*http.Response, string) {
	var cancel context.CancelFunc = func() {}
	perTry := fw.Retry != nil && fw.Retry.PerTryTimeout > 0
	att, req := first, out
	if attempt > 0 || perTry {
		if perTry {
			ctx, cancel = context.WithTimeout(ctx, fw.Retry.PerTryTimeout)
		}
		att = &upstream.Attempt{}
		req = out.WithContext(upstream.WithAttempt(ctx, att))
	}
	req.URL.Host = host.Addr
	end := host.Begin()
	resp, err := b.cluster.Transport(host, b.http2).RoundTrip(req)
	if err != nil {
		ctxErr := ctx.Err() // before cancel, which sets it
		end()
		cancel()
		if ctxErr != nil && !errors.Is(ctxErr, context.DeadlineExceeded) {
			return nil, "DC"
		}
		b.cluster.Report(host, true)
		switch {
		case att.DialFailed():
			return nil, "UF"
		case errors.Is(err, context.DeadlineExceeded) || ctxErr != nil:
			return nil, "UT"
		}
		return nil, "UC"
	}
	b.cluster.Report(host, resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented)
	resp.Body = &endBody{ReadCloser: resp.Body, end: end, cancel: cancel}
	return resp, ""
}

func retriable(rp *route.RetryPolicy, cond string, code int) bool {
	if rp == nil {
		return false
	}
	if code == 0 {
		switch cond {
		case "UF":
			return rp.On["connect-failure"] || rp.On["5xx"] || rp.On["gateway-error"] || rp.On["reset"]
		case "UC":
			return rp.On["reset"] || rp.On["5xx"]
		case "UT":
			return rp.On["5xx"] || rp.On["gateway-error"]
		}
		return false
	}
	switch {
	case code >= 500 && rp.On["5xx"]:
		return true
	case (code == 502 || code == 503 || code == 504) && rp.On["gateway-error"]:
		return true
	case code == 409 && rp.On["retriable-4xx"]:
		return true
	case rp.On["retriable-status-codes"] && rp.Codes[code]:
		return true
	}
	return false
}

// failUpstream answers for a request no attempt could complete.
func (p *Proxy) failUpstream(w *responseWriter, st *state, ctx context.Context) {
	switch {
	case ctx.Err() != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		st.flag("UT")
		p.respondError(w, st, http.StatusGatewayTimeout, bodyTimeout)
	case ctx.Err() != nil:
		st.flag("DC")
	case st.has("UT"):
		p.respondError(w, st, http.StatusGatewayTimeout, bodyTimeout)
	case st.has("UH"):
		p.respondError(w, st, http.StatusServiceUnavailable, bodyNoHealthy)
	case st.has("UO"):
		p.respondError(w, st, http.StatusServiceUnavailable, bodyOverflow)
	case st.has("UF"):
		p.respondError(w, st, http.StatusServiceUnavailable, bodyConnectFailure)
	default:
		if !st.has("UC") {
			st.flag("UC")
		}
		p.respondError(w, st, http.StatusServiceUnavailable, bodyReset)
	}
}

func (s *state) has(f string) bool {
	for _, x := range s.flags {
		if x == f {
			return true
		}
	}
	return false
}

// endBody calls end, then cancel, once when the body is closed.
type endBody struct {
	io.ReadCloser
	end    func()
	cancel context.CancelFunc
	done   bool
}

func (b *endBody) Close() error {
	err := b.ReadCloser.Close()
	if !b.done {
		b.done = true
		b.end()
		b.cancel()
	}
	return err
}

// copyBufs recycles copyBody's buffers: a fresh 32 KiB buffer per request
// was the proxy's largest allocation.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyBody relays the response body, flushing each chunk when streaming.
func copyBody(w *responseWriter, r io.Reader, stream bool) error {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			if stream {
				w.Flush()
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
