package xds_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/zmesh/zmesh/controller/auth"
	"github.com/zmesh/zmesh/controller/xdsserver"
	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/xds"
)

const addressType = "type.googleapis.com/istio.workload.Address"

// recordingAuth accepts the test token and remembers the metadata it saw.
type recordingAuth struct {
	mu sync.Mutex
	md []metadata.MD
}

func (a *recordingAuth) Authenticate(ctx context.Context) (auth.Caller, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	a.mu.Lock()
	a.md = append(a.md, md)
	a.mu.Unlock()
	if slices.Equal(md.Get("authorization"), []string{"Bearer tok"}) {
		return auth.Caller{Identity: "spiffe://cluster.local/ns/istio-system/sa/ztunnel"}, nil
	}
	return auth.Caller{}, errors.New("bad token")
}

// logRecorder is a slog handler keeping records, to see what the server
// logged about its clients.
type logRecorder struct {
	mu    sync.Mutex
	attrs []map[string]string // per "xds node identified" record
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &logAttrs{parent: l, attrs: as}
}
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error { return l.record(nil, r) }

func (l *logRecorder) record(pre []slog.Attr, r slog.Record) error {
	if r.Message != "xds node identified" {
		return nil
	}
	m := map[string]string{}
	for _, a := range pre {
		m[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.String(); return true })
	l.mu.Lock()
	l.attrs = append(l.attrs, m)
	l.mu.Unlock()
	return nil
}

type logAttrs struct {
	parent *logRecorder
	attrs  []slog.Attr
}

func (l *logAttrs) Enabled(context.Context, slog.Level) bool { return true }
func (l *logAttrs) WithGroup(string) slog.Handler            { return l }
func (l *logAttrs) WithAttrs(as []slog.Attr) slog.Handler {
	return &logAttrs{parent: l.parent, attrs: append(slices.Clone(l.attrs), as...)}
}
func (l *logAttrs) Handle(_ context.Context, r slog.Record) error { return l.parent.record(l.attrs, r) }

type server struct {
	srv  *xdsserver.Server
	gs   *grpc.Server
	addr string
}

func startServer(t *testing.T, addr string, a auth.Authenticator, log *slog.Logger, state []xdsserver.Resource) *server {
	t.Helper()
	srv, err := xdsserver.New(xdsserver.Options{Authenticator: a, Registry: prometheus.NewRegistry(), Logger: log,
		DebounceQuiet: 5 * time.Millisecond, DebounceMax: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Update(addressType, state); err != nil {
		t.Fatal(err)
	}
	var lis net.Listener
	for i := 0; ; i++ {
		lis, err = net.Listen("tcp", addr)
		if err == nil || i == 100 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	srv.Register(gs)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	s := &server{srv: srv, gs: gs, addr: lis.Addr().String()}
	t.Cleanup(s.stop)
	return s
}

func (s *server) stop() {
	s.srv.Stop()
	s.gs.Stop()
}

func workload(uid, ip string, rev int) xdsserver.Resource {
	return xdsserver.Resource{
		Name:    uid,
		Aliases: []string{"net1/" + ip},
		Body: &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: &workloadapi.Workload{
			Uid: uid, Name: uid, Namespace: "default", Network: "net1",
			Addresses:         [][]byte{netip.MustParseAddr(ip).AsSlice()},
			CanonicalRevision: fmt.Sprintf("r%d", rev),
		}}},
	}
}

func state(n, rev int) []xdsserver.Resource {
	out := make([]xdsserver.Resource, n)
	for i := range out {
		out[i] = workload(fmt.Sprintf("wl-%d", i), fmt.Sprintf("10.0.0.%d", i+1), rev)
	}
	return out
}

// recorder is a Handler logging every delta.
type recorder struct {
	mu     sync.Mutex
	deltas []xds.Delta
	items  map[string]xds.Upsert
}

func (r *recorder) HandleDelta(d xds.Delta) []xds.Rejection {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.items == nil {
		r.items = make(map[string]xds.Upsert)
	}
	r.deltas = append(r.deltas, d)
	for _, u := range d.Upserts {
		r.items[u.Name] = u
	}
	for _, n := range d.Removals {
		delete(r.items, n)
	}
	return nil
}

func (r *recorder) snapshot() ([]xds.Delta, map[string]xds.Upsert) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.deltas), maps(r.items)
}

func maps(m map[string]xds.Upsert) map[string]xds.Upsert {
	out := make(map[string]xds.Upsert, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func rev(u xds.Upsert) string {
	return u.Message.(*workloadapi.Address).GetWorkload().GetCanonicalRevision()
}

func newClient(t *testing.T, addr string, h xds.Handler, mode xds.Mode) *xds.Client {
	t.Helper()
	c, err := xds.New(xds.Config{
		Address:     addr,
		DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
		Node:        xds.Node{IP: "10.0.0.99", PodName: "ztunnel-abc", Namespace: "istio-system", NodeName: "node1"},
		ClusterID:   "Kubernetes",
		Token:       func(context.Context) (string, error) { return "tok", nil },
		Types: []xds.TypeConfig{{TypeURL: addressType, New: func() proto.Message { return new(workloadapi.Address) },
			Handler: h, Mode: mode}},
		Backoff: xds.Backoff{Initial: 20 * time.Millisecond, Max: 100 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestClientIdentifiesItself(t *testing.T) {
	a := &recordingAuth{}
	logs := &logRecorder{}
	s := startServer(t, "127.0.0.1:0", a, slog.New(logs), state(2, 0))
	c := newClient(t, s.addr, &recorder{}, xds.Wildcard)
	<-c.Synced(addressType)
	a.mu.Lock()
	md := a.md[0]
	a.mu.Unlock()
	if !slices.Equal(md.Get("clusterid"), []string{"Kubernetes"}) || !slices.Equal(md.Get("authorization"), []string{"Bearer tok"}) {
		t.Fatalf("metadata %v", md)
	}
	logs.mu.Lock()
	defer logs.mu.Unlock()
	if len(logs.attrs) != 1 {
		t.Fatalf("node logged %d times", len(logs.attrs))
	}
	got := logs.attrs[0]
	want := map[string]string{
		"node_id":      "ztunnel~10.0.0.99~ztunnel-abc.istio-system~istio-system.svc.cluster.local",
		"name":         "ztunnel-abc",
		"namespace":    "istio-system",
		"instance_ips": "10.0.0.99",
		"node_name":    "node1",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("server saw %s=%q, want %q", k, got[k], v)
		}
	}
}

// The server goes away and comes back on the same address: the client
// reconnects by itself and, thanks to initial_resource_versions, receives
// only what changed meanwhile.
func TestClientReconnects(t *testing.T) {
	s := startServer(t, "127.0.0.1:0", &recordingAuth{}, nil, state(5, 0))
	addr := s.addr
	rec := &recorder{}
	c := newClient(t, addr, rec, xds.Wildcard)
	<-c.Synced(addressType)
	if _, items := rec.snapshot(); len(items) != 5 {
		t.Fatalf("initial: %d items", len(items))
	}
	s.stop()
	time.Sleep(300 * time.Millisecond) // several failed attempts

	// Back with the same state: nothing is resent.
	s = startServer(t, addr, &recordingAuth{}, nil, state(5, 0))
	waitFor(t, "the reconnect response", func() bool { d, _ := rec.snapshot(); return len(d) == 2 })
	deltas, _ := rec.snapshot()
	if d := deltas[1]; len(d.Upserts)+len(d.Removals) != 0 {
		t.Fatalf("same state resent %d upserts, %d removals", len(d.Upserts), len(d.Removals))
	}
	s.stop()

	// Back with wl-1 changed and wl-4 gone: exactly that.
	changed := state(4, 0)
	changed[1] = workload("wl-1", "10.0.0.2", 1)
	s = startServer(t, addr, &recordingAuth{}, nil, changed)
	waitFor(t, "the second reconnect response", func() bool { d, _ := rec.snapshot(); return len(d) == 3 })
	deltas, items := rec.snapshot()
	d := deltas[2]
	if len(d.Upserts) != 1 || d.Upserts[0].Name != "wl-1" || !slices.Equal(d.Removals, []string{"wl-4"}) {
		t.Fatalf("got upserts %v removals %v", d.Upserts, d.Removals)
	}
	if len(items) != 4 || rev(items["wl-1"]) != "r1" {
		t.Fatalf("state %v", items)
	}
	// And live changes flow on the new stream.
	if err := s.srv.Upsert(addressType, workload("wl-0", "10.0.0.1", 2)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a live change", func() bool { _, it := rec.snapshot(); return rev(it["wl-0"]) == "r2" })
}

func TestClientOnDemand(t *testing.T) {
	s := startServer(t, "127.0.0.1:0", &recordingAuth{}, nil, state(3, 0))
	addr := s.addr
	rec := &recorder{}
	c := newClient(t, addr, rec, xds.OnDemand)
	<-c.Synced(addressType)
	if _, items := rec.snapshot(); len(items) != 0 {
		t.Fatalf("on-demand client got %d items unasked", len(items))
	}
	if err := c.Subscribe(addressType, "net1/10.0.0.2", "net1/10.9.9.9"); err != nil {
		t.Fatal(err)
	}
	var sawRemoval bool
	waitFor(t, "the on-demand answers", func() bool {
		deltas, items := rec.snapshot()
		for _, d := range deltas {
			sawRemoval = sawRemoval || slices.Contains(d.Removals, "net1/10.9.9.9")
		}
		return sawRemoval && items["wl-1"].Name != ""
	})
	_, items := rec.snapshot()
	if len(items) != 1 || !slices.Contains(items["wl-1"].Aliases, "net1/10.0.0.2") {
		t.Fatalf("items %v", items)
	}
	if err := c.Subscribe("type.googleapis.com/nope", "x"); err == nil {
		t.Fatal("Subscribe to an unconfigured type succeeded")
	}

	// Across a server restart the subscription holds: a change to the
	// subscribed workload arrives, nothing else does.
	s.stop()
	next := state(3, 0)
	next[1] = workload("wl-1", "10.0.0.2", 4)
	next[2] = workload("wl-2", "10.0.0.3", 4)
	s = startServer(t, addr, &recordingAuth{}, nil, next)
	waitFor(t, "the change after reconnect", func() bool { _, it := rec.snapshot(); return rev(it["wl-1"]) == "r4" })
	if _, items := rec.snapshot(); len(items) != 1 {
		t.Fatalf("items after reconnect %v", items)
	}

	if err := c.Unsubscribe(addressType, "net1/10.0.0.2"); err != nil {
		t.Fatal(err)
	}
	if _, items := rec.snapshot(); len(items) != 0 {
		t.Fatalf("unsubscribed resource kept: %v", items)
	}
	before, _ := rec.snapshot()
	if err := s.srv.Upsert(addressType, workload("wl-1", "10.0.0.2", 5)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if after, _ := rec.snapshot(); len(after) != len(before) {
		t.Fatalf("update pushed after unsubscribe: %+v", after[len(before):])
	}
}

func TestClientStopWhileDisconnected(t *testing.T) {
	// Nothing listens here: the client keeps backing off until Stop.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	c := newClient(t, addr, &recorder{}, xds.Wildcard)
	time.Sleep(150 * time.Millisecond)
	done := make(chan struct{})
	go func() { c.Stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Stop hung")
	}
	select {
	case <-c.Synced(addressType):
		t.Fatal("synced without a server")
	default:
	}
}

// flappingADS answers each stream's first request with one empty response
// and then ends the stream, counting the streams.
type flappingADS struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	streams atomic.Int64
}

func (f *flappingADS) DeltaAggregatedResources(s discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	f.streams.Add(1)
	req, err := s.Recv()
	if err != nil {
		return err
	}
	if err := s.Send(&discoveryv3.DeltaDiscoveryResponse{TypeUrl: req.GetTypeUrl(), Nonce: "1"}); err != nil {
		return err
	}
	return status.Error(codes.Internal, "flapping on purpose")
}

// TestClientBacksOffFromFlappingServer: a stream that delivers a response
// and then fails at once does not reset the backoff, so a server that
// fails right after its first response is not retried in a tight loop.
func TestClientBacksOffFromFlappingServer(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	f := &flappingADS{}
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, f)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	c := newClient(t, lis.Addr().String(), &recorder{}, xds.Wildcard) // backoff 20 ms up to 100 ms
	<-c.Synced(addressType)
	time.Sleep(time.Second)
	// Resetting after each response retries every 10-20 ms (50-100 streams
	// a second); backing off reaches 50-100 ms within four attempts.
	if n := f.streams.Load(); n < 4 || n > 25 {
		t.Fatalf("%d streams in a second", n)
	}
}
