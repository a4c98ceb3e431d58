package xdsserver

import (
	"cmp"
	"errors"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zmesh/zmesh/controller/auth"
	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/workloadapi/security"
)

// maxPendingSets bounds the change sets a stream keeps queued per type;
// beyond it the stream forgets them and reconciles the whole type instead.
const maxPendingSets = 16

// stream is one delta ADS stream. Its handler goroutine (run) sends; a
// receiver goroutine applies requests. Both work on the per-type watches
// under mu and meet through the wake channel.
type stream struct {
	srv    *Server
	gs     discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer
	caller auth.Caller
	id     uint64
	wake   chan struct{} // capacity 1: "some watch has work"

	mu       sync.Mutex        // guards watches, log, nodeSeen and nonce
	watches  map[string]*watch // by type URL
	log      *slog.Logger
	nodeSeen bool
	nonce    uint64
}

// watch is a stream's subscription to one type and what the client holds.
// All fields are guarded by stream.mu.
type watch struct {
	typeURL  string
	wildcard bool
	keys     map[string]struct{} // explicit subscriptions: names or aliases
	sent     map[string]string   // name -> version the client holds
	absent   map[string]struct{} // keys already answered as removed

	// Pending work.
	first   bool                  // answer even if there is nothing to send
	full    bool                  // reconcile the whole type
	changes []map[string]struct{} // shared, read-only change sets
	force   map[string]struct{}   // keys to answer even if already sent
}

func newStream(srv *Server, gs discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer, caller auth.Caller, id uint64) *stream {
	return &stream{
		srv:     srv,
		gs:      gs,
		caller:  caller,
		id:      id,
		wake:    make(chan struct{}, 1),
		watches: make(map[string]*watch),
		log:     srv.log.With("stream", id, "caller", caller.Identity),
	}
}

func (st *stream) signal() {
	select {
	case st.wake <- struct{}{}:
	default:
	}
}

// run serves the stream until the client leaves, an error, or Stop.
func (st *stream) run() error {
	st.logger().Info("xds stream connected")
	recvErr := make(chan error, 1)
	st.srv.wg.Add(1)
	go func() {
		defer st.srv.wg.Done()
		recvErr <- st.receive()
	}()
	for {
		select {
		case <-st.srv.ctx.Done():
			st.logger().Info("xds stream closed", "reason", "server stopping")
			return status.Error(codes.Unavailable, "xds server stopping")
		case err := <-recvErr:
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
				st.logger().Info("xds stream closed", "reason", "client")
				return nil
			}
			st.logger().Warn("xds stream closed", "reason", err)
			return err
		case <-st.wake:
		}
		for _, resp := range st.collect() {
			if err := st.gs.Send(resp); err != nil {
				st.logger().Warn("xds send failed", "type", resp.TypeUrl, "error", err)
				return err
			}
			st.srv.metrics.pushes.WithLabelValues(typeLabel(resp.TypeUrl)).Inc()
			st.logger().Debug("xds push", "type", resp.TypeUrl, "nonce", resp.Nonce,
				"resources", len(resp.Resources), "removed", len(resp.RemovedResources))
		}
	}
}

func (st *stream) logger() *slog.Logger {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.log
}

// receive applies requests until the stream fails.
func (st *stream) receive() error {
	for {
		req, err := st.gs.Recv()
		if err != nil {
			return err
		}
		if err := st.handle(req); err != nil {
			return err
		}
	}
}

// handle applies one request: node, ACK/NACK, subscription changes. It
// fails (ending the stream) when the request would take the stream past
// its limits.
func (st *stream) handle(req *discoveryv3.DeltaDiscoveryRequest) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if req.GetNode() != nil && !st.nodeSeen {
		st.nodeSeen = true
		st.log = st.log.With(nodeAttrs(req.GetNode())...)
		st.log.Info("xds node identified")
	}
	typeURL := req.GetTypeUrl()
	if typeURL == "" {
		st.log.Warn("xds request without type_url ignored")
		return nil
	}
	if nonce := req.GetResponseNonce(); nonce != "" {
		if d := req.GetErrorDetail(); d != nil {
			st.srv.metrics.rejects.WithLabelValues(typeLabel(typeURL)).Inc()
			st.log.Warn("xds NACK", "type", typeURL, "nonce", nonce, "code", d.GetCode(), "detail", d.GetMessage())
		} else {
			st.log.Debug("xds ACK", "type", typeURL, "nonce", nonce)
		}
	}
	w := st.watches[typeURL]
	first := w == nil
	if first && len(st.watches) >= maxTypesPerStream {
		return status.Errorf(codes.ResourceExhausted, "a stream may watch at most %d resource types", maxTypesPerStream)
	}
	if err := st.checkKeys(w, req); err != nil {
		return err
	}
	if first {
		w = &watch{
			typeURL: typeURL,
			keys:    make(map[string]struct{}),
			sent:    make(map[string]string, len(req.GetInitialResourceVersions())),
			absent:  make(map[string]struct{}),
			force:   make(map[string]struct{}),
			first:   true,
			full:    true,
		}
		st.watches[typeURL] = w
		// The first request of a type with no names is a wildcard
		// subscription (the legacy form ztunnel uses).
		w.wildcard = len(req.GetResourceNamesSubscribe()) == 0
		for name, v := range req.GetInitialResourceVersions() {
			w.sent[name] = v
		}
	}
	if len(req.GetResourceNamesSubscribe())+len(req.GetResourceNamesUnsubscribe()) == 0 && !first {
		return nil // a plain ACK/NACK
	}
	for _, k := range req.GetResourceNamesSubscribe() {
		if k == "*" {
			if !w.wildcard {
				w.wildcard, w.full = true, true
			}
			continue
		}
		w.keys[k] = struct{}{}
		if !first {
			// Answer a new key even if the client holds its resource
			// under another key; on the first request the initial
			// versions say what it holds.
			w.force[k] = struct{}{}
		}
		delete(w.absent, k)
	}
	unsubscribed := false
	for _, k := range req.GetResourceNamesUnsubscribe() {
		if k == "*" {
			unsubscribed = unsubscribed || w.wildcard
			w.wildcard = false
			continue
		}
		if _, ok := w.keys[k]; ok {
			unsubscribed = true
		}
		delete(w.keys, k)
		delete(w.force, k)
		delete(w.absent, k)
	}
	if unsubscribed && !first {
		// The client drops what it unsubscribed from; forget it silently.
		// (On the first request, held resources nobody wants are instead
		// removed explicitly by the reconcile.)
		st.srv.store.mu.RLock()
		w.forgetUnwanted(st.srv.store.typeLocked(typeURL))
		st.srv.store.mu.RUnlock()
	}
	st.log.Debug("xds subscription", "type", typeURL, "wildcard", w.wildcard, "keys", len(w.keys),
		"subscribe", req.GetResourceNamesSubscribe(), "unsubscribe", req.GetResourceNamesUnsubscribe())
	st.signal()
	return nil
}

// checkKeys bounds what one request adds to watch w (nil for a new one):
// subscribed names to Options.MaxKeys, and the versions a client says it
// holds to MaxKeys beyond what the server serves of the type (a wildcard
// client reconnecting holds all of it).
func (st *stream) checkKeys(w *watch, req *discoveryv3.DeltaDiscoveryRequest) error {
	limit, typeURL := st.srv.maxKeys, req.GetTypeUrl()
	subscribed := len(req.GetResourceNamesSubscribe())
	if w != nil {
		subscribed += len(w.keys)
	}
	if subscribed > limit {
		return status.Errorf(codes.ResourceExhausted, "a stream may subscribe to at most %d names of %s", limit, typeURL)
	}
	if held := len(req.GetInitialResourceVersions()); held > limit {
		st.srv.store.mu.RLock()
		served := 0
		if ts := st.srv.store.typeLocked(typeURL); ts != nil {
			served = len(ts.entries)
		}
		st.srv.store.mu.RUnlock()
		if held > limit+served {
			return status.Errorf(codes.ResourceExhausted, "a stream may claim to hold at most %d names of %s", limit+served, typeURL)
		}
	}
	return nil
}

// changed queues a debounced batch for the watches it concerns.
func (st *stream) changed(cs changeSet) {
	st.mu.Lock()
	defer st.mu.Unlock()
	woke := false
	for typeURL, names := range cs {
		w := st.watches[typeURL]
		if w == nil {
			continue
		}
		if !w.full {
			if len(w.changes) >= maxPendingSets {
				w.full, w.changes = true, nil
			} else {
				w.changes = append(w.changes, names)
			}
		}
		woke = true
	}
	if woke {
		st.signal()
	}
}

// collect builds the responses for all pending work and records what the
// client will hold once they are sent.
func (st *stream) collect() []*discoveryv3.DeltaDiscoveryResponse {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.srv.store.mu.RLock()
	defer st.srv.store.mu.RUnlock()
	var out, last []*discoveryv3.DeltaDiscoveryResponse
	respond := func(typeURL string, resources []*discoveryv3.Resource, removed []string) *discoveryv3.DeltaDiscoveryResponse {
		st.nonce++
		return &discoveryv3.DeltaDiscoveryResponse{
			TypeUrl: typeURL, Resources: resources, RemovedResources: removed, Nonce: strconv.FormatUint(st.nonce, 10),
		}
	}
	for _, typeURL := range pushOrder(st.watches) {
		w := st.watches[typeURL]
		if !w.pending() {
			continue
		}
		first := w.first
		resources, removed := w.reconcile(st.srv.store.typeLocked(typeURL))
		switch {
		case len(resources) == 0 && len(removed) == 0 && !first:
		case typeURL == security.AuthorizationTypeURL && len(removed) > 0:
			// Policy removals go out after the workloads stop listing them.
			if len(resources) > 0 || first {
				out = append(out, respond(typeURL, resources, nil))
			}
			last = append(last, respond(typeURL, nil, removed))
		default:
			out = append(out, respond(typeURL, resources, removed))
		}
	}
	return append(out, last...)
}

// pushOrder lists the watched types in the order their changes are sent:
// policies before the addresses whose workloads list them (and, in
// collect, policy removals after them), so that a client never holds a
// workload that names a policy it lacks; ztunnel denies new connections to
// such a workload (fail-closed) until the policy arrives. Other types
// follow in name order.
func pushOrder(watches map[string]*watch) []string {
	rank := func(t string) int {
		switch t {
		case security.AuthorizationTypeURL:
			return 0
		case workloadapi.AddressTypeURL:
			return 1
		}
		return 2
	}
	types := slices.Collect(maps.Keys(watches))
	slices.SortFunc(types, func(a, b string) int { return cmp.Or(cmp.Compare(rank(a), rank(b)), strings.Compare(a, b)) })
	return types
}

func (w *watch) pending() bool {
	return w.first || w.full || len(w.changes) > 0 || len(w.force) > 0
}

// wantedBy resolves the explicit keys to the names they cover.
func (w *watch) wantedBy(ts *typeStore) map[string]struct{} {
	names := make(map[string]struct{}, len(w.keys))
	for k := range w.keys {
		if e := ts.resolve(k); e != nil {
			names[e.name] = struct{}{}
		}
	}
	return names
}

// forgetUnwanted drops from sent what the subscription no longer covers.
func (w *watch) forgetUnwanted(ts *typeStore) {
	if w.wildcard {
		return
	}
	wanted := w.wantedBy(ts)
	for name := range w.sent {
		if _, ok := wanted[name]; !ok {
			delete(w.sent, name)
		}
	}
}

// reconcile computes what the client lacks and what it holds in vain,
// updates sent and absent accordingly and clears the pending work. ts may
// be nil (nothing of the type published).
func (w *watch) reconcile(ts *typeStore) ([]*discoveryv3.Resource, []string) {
	add := make(map[string]*entry)
	removed := make(map[string]struct{})
	consider := func(name string, wanted bool) {
		e := ts.get(name)
		v, held := w.sent[name]
		switch {
		case e != nil && wanted:
			if !held || v != e.version {
				add[name] = e
			}
		case held:
			removed[name] = struct{}{}
		}
	}
	if w.wildcard {
		switch {
		case w.full:
			if ts != nil {
				for name := range ts.entries {
					consider(name, true)
				}
			}
			for name := range w.sent {
				consider(name, true)
			}
		default:
			for _, set := range w.changes {
				for name := range set {
					consider(name, true)
				}
			}
		}
	}
	if len(w.keys) > 0 || (!w.wildcard && len(w.sent) > 0) {
		// On-demand keys are few: re-resolve them all on any change.
		wanted := make(map[string]struct{}, len(w.keys))
		for k := range w.keys {
			e := ts.resolve(k)
			_, forced := w.force[k]
			if e == nil {
				if _, told := w.absent[k]; forced || !told {
					if _, held := w.sent[k]; !held {
						removed[k] = struct{}{}
					}
					w.absent[k] = struct{}{}
				}
				continue
			}
			delete(w.absent, k)
			wanted[e.name] = struct{}{}
			if v, held := w.sent[e.name]; forced || !held || v != e.version {
				add[e.name] = e
			}
		}
		if !w.wildcard {
			for name := range w.sent {
				_, ok := wanted[name]
				consider(name, ok)
			}
		}
	}
	w.first, w.full, w.changes = false, false, nil
	clear(w.force)

	resources := make([]*discoveryv3.Resource, 0, len(add))
	for name, e := range add {
		w.sent[name] = e.version
		resources = append(resources, &discoveryv3.Resource{
			Name:     e.name,
			Version:  e.version,
			Aliases:  e.aliases,
			Resource: e.body,
		})
	}
	out := make([]string, 0, len(removed))
	for name := range removed {
		delete(w.sent, name)
		out = append(out, name)
	}
	return resources, out
}

// nodeAttrs are the log attributes describing a client's node.
func nodeAttrs(n *corev3.Node) []any {
	attrs := []any{"node_id", n.GetId()}
	if md := n.GetMetadata().GetFields(); md != nil {
		for _, k := range []string{"NAME", "NAMESPACE", "INSTANCE_IPS", "NODE_NAME"} {
			if v, ok := md[k]; ok {
				attrs = append(attrs, strings.ToLower(k), v.GetStringValue())
			}
		}
	}
	return attrs
}
