package xdsserver_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/zmesh/zmesh/controller/auth"
	"github.com/zmesh/zmesh/controller/xdsserver"
	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/workloadapi/security"
)

const (
	addressType = "type.googleapis.com/istio.workload.Address"
	authzType   = "type.googleapis.com/istio.security.Authorization"
	testToken   = "good-token"
)

// tokenAuth accepts callers presenting "authorization: Bearer good-token".
type tokenAuth struct{}

func (tokenAuth) Authenticate(ctx context.Context) (auth.Caller, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("authorization"); len(v) == 1 && v[0] == "Bearer "+testToken {
		return auth.Caller{Identity: "spiffe://cluster.local/ns/istio-system/sa/ztunnel"}, nil
	}
	return auth.Caller{}, errors.New("no valid token")
}

type harness struct {
	srv  *xdsserver.Server
	reg  *prometheus.Registry
	gs   *grpc.Server
	addr string
}

// startServer runs a server on addr ("127.0.0.1:0" for any port), seeds it
// with state before Start, and stops it at the end of the test.
func startServer(t testing.TB, addr string, opts xdsserver.Options, seed func(*xdsserver.Server)) *harness {
	t.Helper()
	reg := prometheus.NewRegistry()
	if opts.Authenticator == nil {
		opts.Authenticator = tokenAuth{}
	}
	opts.Registry = reg
	srv, err := xdsserver.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if seed != nil {
		seed(srv)
	}
	var lis net.Listener
	for i := 0; ; i++ { // the port of a just-stopped server may linger briefly
		lis, err = net.Listen("tcp", addr)
		if err == nil || i == 50 {
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
	h := &harness{srv: srv, reg: reg, gs: gs, addr: lis.Addr().String()}
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	h.srv.Stop()
	h.gs.Stop()
}

// counter reads a counter or gauge value from the registry (0 if absent).
func (h *harness) counter(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metrics
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// rawStream is a hand-driven delta ADS stream, for checking the wire.
type rawStream struct {
	t      testing.TB
	stream discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	resps  chan *discoveryv3.DeltaDiscoveryResponse
	errs   chan error
}

func dialRaw(t testing.TB, addr, token string) *rawStream {
	t.Helper()
	r := dialRawPaused(t, addr, token)
	r.startReading()
	return r
}

// dialRawPaused opens a stream that reads nothing until startReading.
func dialRawPaused(t testing.TB, addr, token string) *rawStream {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		_ = conn.Close()
	})
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &rawStream{t: t, stream: stream, resps: make(chan *discoveryv3.DeltaDiscoveryResponse, 100), errs: make(chan error, 1)}
}

func (r *rawStream) startReading() {
	stream := r.stream
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				r.errs <- err
				return
			}
			r.resps <- resp
		}
	}()
}

func (r *rawStream) send(req *discoveryv3.DeltaDiscoveryRequest) {
	r.t.Helper()
	if err := r.stream.Send(req); err != nil {
		r.t.Fatalf("send: %v", err)
	}
}

func (r *rawStream) recv() *discoveryv3.DeltaDiscoveryResponse {
	r.t.Helper()
	select {
	case resp := <-r.resps:
		return resp
	case err := <-r.errs:
		r.t.Fatalf("stream failed: %v", err)
	case <-time.After(5 * time.Second):
		r.t.Fatal("no response within 5s")
	}
	return nil
}

// recvAck receives a response and ACKs it.
func (r *rawStream) recvAck() *discoveryv3.DeltaDiscoveryResponse {
	r.t.Helper()
	resp := r.recv()
	r.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.TypeUrl, ResponseNonce: resp.Nonce})
	return resp
}

func (r *rawStream) expectNothing(d time.Duration) {
	r.t.Helper()
	select {
	case resp := <-r.resps:
		r.t.Fatalf("unexpected response: %d resources, removed %v", len(resp.Resources), resp.RemovedResources)
	case err := <-r.errs:
		r.t.Fatalf("stream failed: %v", err)
	case <-time.After(d):
	}
}

func (r *rawStream) err() error {
	r.t.Helper()
	select {
	case err := <-r.errs:
		return err
	case resp := <-r.resps:
		r.t.Fatalf("unexpected response %v", resp)
	case <-time.After(5 * time.Second):
		r.t.Fatal("stream still open after 5s")
	}
	return nil
}

// workload builds a synthetic Address resource named uid with alias
// "net1/<ip>"; rev varies the content.
func workload(uid, ip string, rev int) xdsserver.Resource {
	a := netip.MustParseAddr(ip)
	return xdsserver.Resource{
		Name:    uid,
		Aliases: []string{"net1/" + ip},
		Body: &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: &workloadapi.Workload{
			Uid:               uid,
			Name:              uid,
			Namespace:         "default",
			Addresses:         [][]byte{a.AsSlice()},
			Network:           "net1",
			TunnelProtocol:    workloadapi.TunnelProtocol_HBONE,
			ServiceAccount:    "sa",
			Node:              "node1",
			CanonicalRevision: fmt.Sprintf("r%d", rev),
		}}},
	}
}

// workloads builds n workloads wl-0..wl-(n-1) on 10.<i>.
func workloads(n, rev int) []xdsserver.Resource {
	out := make([]xdsserver.Resource, n)
	for i := range out {
		out[i] = workload(fmt.Sprintf("Kubernetes//Pod/default/wl-%d", i), ipFor(i), rev)
	}
	return out
}

func ipFor(i int) string {
	return fmt.Sprintf("10.%d.%d.%d", 1+i>>16&0xff, i>>8&0xff, i&0xff)
}

func policy(name string) xdsserver.Resource {
	return xdsserver.Resource{Name: "default/" + name, Body: &security.Authorization{Name: name, Namespace: "default", Action: security.Action_DENY}}
}

func names(resp *discoveryv3.DeltaDiscoveryResponse) map[string]*discoveryv3.Resource {
	out := make(map[string]*discoveryv3.Resource, len(resp.Resources))
	for _, r := range resp.Resources {
		out[r.Name] = r
	}
	return out
}

func versions(resp *discoveryv3.DeltaDiscoveryResponse) map[string]string {
	out := make(map[string]string, len(resp.Resources))
	for _, r := range resp.Resources {
		out[r.Name] = r.Version
	}
	return out
}

func fastOpts() xdsserver.Options {
	return xdsserver.Options{DebounceQuiet: 5 * time.Millisecond, DebounceMax: 50 * time.Millisecond}
}
