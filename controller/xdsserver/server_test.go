package xdsserver_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/zmesh/zmesh/controller/xdsserver"
	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/workloadapi/security"
)

func seedThree(s *xdsserver.Server) {
	if err := s.Update(addressType, workloads(3, 0)); err != nil {
		panic(err)
	}
	if err := s.Update(authzType, []xdsserver.Resource{policy("p1")}); err != nil {
		panic(err)
	}
}

func TestWildcardFullState(t *testing.T) {
	h := startServer(t, "127.0.0.1:0", fastOpts(), seedThree)
	r := dialRaw(t, h.addr, testToken)
	r.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: addressType})
	resp := r.recvAck()
	if resp.TypeUrl != addressType || len(resp.Resources) != 3 || len(resp.RemovedResources) != 0 {
		t.Fatalf("got %d resources (removed %v), want 3", len(resp.Resources), resp.RemovedResources)
	}
	want := workloads(3, 0)
	got := names(resp)
	for _, w := range want {
		res := got[w.Name]
		if res == nil {
			t.Fatalf("missing %s", w.Name)
		}
		if !slices.Equal(res.Aliases, w.Aliases) || res.Version == "" {
			t.Errorf("%s: aliases %v version %q", w.Name, res.Aliases, res.Version)
		}
		var a workloadapi.Address
		if err := res.Resource.UnmarshalTo(&a); err != nil || !proto.Equal(&a, w.Body) {
			t.Errorf("%s: body mismatch (%v)", w.Name, err)
		}
	}
	// The other type is independent.
	r.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: authzType, ResourceNamesSubscribe: []string{"*"}})
	if resp := r.recvAck(); resp.TypeUrl != authzType || len(resp.Resources) != 1 || resp.Resources[0].Name != "default/p1" {
		t.Fatalf("authorization: %v", resp)
	}
	r.expectNothing(50 * time.Millisecond)
	if got := h.counter(t, "pilot_xds"); got != 1 {
		t.Errorf("pilot_xds = %v, want 1", got)
	}
	if got := h.counter(t, "pilot_xds_pushes", "type", "istio.workload.Address"); got != 1 {
		t.Errorf("pilot_xds_pushes = %v, want 1", got)
	}
}

func TestStateOfTheWorldUnimplemented(t *testing.T) {
	h := startServer(t, "127.0.0.1:0", fastOpts(), nil)
	conn, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); status.Code(err) != codes.Unimplemented {
		t.Fatalf("got %v, want Unimplemented", err)
	}
}

func TestUpdateSendsOnlyChanges(t *testing.T) {
	h := startServer(t, "127.0.0.1:0", fastOpts(), seedThree)
	r := dialRaw(t, h.addr, testToken)
	r.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: addressType})
	first := versions(r.recvAck())

	// Same content in fresh messages: nothing to push.
	if err := h.srv.Update(addressType, workloads(3, 0)); err != nil {
		t.Fatal(err)
	}
	r.expectNothing(100 * time.Millisecond)

	// wl-1 changes, wl-2 goes away.
	next := workloads(3, 0)
	next[1] = workload(next[1].Name, ipFor(1), 7)
	if err := h.srv.Update(addressType, next[:2]); err != nil {
		t.Fatal(err)
	}
	resp := r.recvAck()
	if len(resp.Resources) != 1 || resp.Resources[0].Name != next[1].Name {
		t.Fatalf("got %v, want exactly %s", versions(resp), next[1].Name)
	}
	if resp.Resources[0].Version == first[next[1].Name] {
		t.Error("version did not change")
	}
	if !slices.Equal(resp.RemovedResources, []string{"Kubernetes//Pod/default/wl-2"}) {
		t.Fatalf("removed %v", resp.RemovedResources)
	}
	// Invalid input is refused whole.
	bad := append(workloads(1, 0), policy("wrong-type"))
	if err := h.srv.Update(addressType, bad); err == nil {
		t.Fatal("Update accepted an Authorization as an Address")
	}
	r.expectNothing(100 * time.Millisecond)
}

func TestReconnectWithInitialVersions(t *testing.T) {
	h := startServer(t, "127.0.0.1:0", fastOpts(), func(s *xdsserver.Server) { _ = s.Update(addressType, workloads(5, 0)) })
	r := dialRaw(t, h.addr, testToken)
	r.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: addressType})
	held := versions(r.recvAck())
	if len(held) != 5 {
		t.Fatalf("got %d", len(held))
	}
	h.stop()

	// A new server process with the same state: nothing is resent.
	h2 := startServer(t, "127.0.0.1:0", fastOpts(), func(s *xdsserver.Server) { _ = s.Update(addressType, workloads(5, 0)) })
	r2 := dialRaw(t, h2.addr, testToken)
	r2.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: addressType, InitialResourceVersions: held})
	resp := r2.recvAck()
	if len(resp.Resources) != 0 || len(resp.RemovedResources) != 0 {
		t.Fatalf("resent %d resources, removed %v; want nothing", len(resp.Resources), resp.RemovedResources)
	}
	h2.stop()

	// While away: wl-1 changed, wl-4 deleted, wl-9 added.
	state := workloads(4, 0)
	state[1] = workload(state[1].Name, ipFor(1), 3)
	state = append(state, workload("Kubernetes//Pod/default/wl-9", ipFor(9), 0))
	h3 := startServer(t, "127.0.0.1:0", fastOpts(), func(s *xdsserver.Server) { _ = s.Update(addressType, state) })
	r3 := dialRaw(t, h3.addr, testToken)
	r3.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: addressType, InitialResourceVersions: held})
	resp = r3.recvAck()
	got := versions(resp)
	if len(got) != 2 || got[state[1].Name] == "" || got["Kubernetes//Pod/default/wl-9"] == "" {
		t.Fatalf("got %v, want wl-1 and wl-9", got)
	}
	if !slices.Equal(resp.RemovedResources, []string{"Kubernetes//Pod/default/wl-4"}) {
		t.Fatalf("removed %v, want wl-4", resp.RemovedResources)
	}
}

func TestOnDemandByAlias(t *testing.T) {
	h := startServer(t, "127.0.0.1:0", fastOpts(), seedThree)
	r := dialRaw(t, h.addr, testToken)
	r.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: addressType,
		ResourceNamesSubscribe: []string{"*"}, ResourceNamesUnsubscribe: []string{"*"}})
	if resp := r.recvAck(); len(resp.Resources)+len(resp.RemovedResources) != 0 {
		t.Fatalf("on-demand start sent %v / %v", versions(resp), resp.RemovedResources)
	}
	alias := "net1/" + ipFor(1)
	r.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: addressType, ResourceNamesSubscribe: []string{alias}})
	resp := r.recvAck()
	if len(resp.Resources) != 1 || resp.Resources[0].Name != "Kubernetes//Pod/default/wl-1" ||
		!slices.Contains(resp.Resources[0].Aliases, alias) || len(resp.RemovedResources) != 0 {
		t.Fatalf("got %v aliases of first %v removed %v", versions(resp), resp.Resources, resp.RemovedResources)
	}

	unknown := "net1/192.168.7.7"
	r.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: addressType, ResourceNamesSubscribe: []string{unknown}})
	resp = r.recvAck()
	if len(resp.Resources) != 0 || !slices.Equal(resp.RemovedResources, []string{unknown}) {
		t.Fatalf("unknown key: got %v removed %v", versions(resp), resp.RemovedResources)
	}

	// Changes to resources nobody asked for are not pushed.
	if err := h.srv.Upsert(addressType, workload("Kubernetes//Pod/default/wl-0", ipFor(0), 5)); err != nil {
		t.Fatal(err)
	}
	r.expectNothing(100 * time.Millisecond)

	// The missing key appears later: it is pushed under its real name.
	if err := h.srv.Upsert(addressType, workload("Kubernetes//Pod/default/late", "192.168.7.7", 0)); err != nil {
		t.Fatal(err)
	}
	resp = r.recvAck()
	if len(resp.Resources) != 1 || resp.Resources[0].Name != "Kubernetes//Pod/default/late" {
		t.Fatalf("late: got %v", versions(resp))
	}
	// And its deletion is pushed.
	h.srv.Delete(addressType, "Kubernetes//Pod/default/late")
	resp = r.recvAck()
	if !slices.Contains(resp.RemovedResources, "Kubernetes//Pod/default/late") {
		t.Fatalf("delete: removed %v", resp.RemovedResources)
	}
}

func TestUnauthenticatedRefused(t *testing.T) {
	h := startServer(t, "127.0.0.1:0", fastOpts(), seedThree)
	r := dialRaw(t, h.addr, "wrong")
	// The server refuses the stream before reading a request, so Send may
	// already see the stream closed (io.EOF); the status comes from Recv.
	_ = r.stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: addressType})
	if err := r.err(); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("got %v, want Unauthenticated", err)
	}
	if got := h.counter(t, "pilot_xds"); got != 0 {
		t.Errorf("pilot_xds = %v", got)
	}
}

func TestDebounceCoalescesBurst(t *testing.T) {
	opts := xdsserver.Options{DebounceQuiet: 20 * time.Millisecond, DebounceMax: 200 * time.Millisecond}
	h := startServer(t, "127.0.0.1:0", opts, seedThree)
	r := dialRaw(t, h.addr, testToken)
	r.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: addressType})
	r.recvAck()
	before := h.counter(t, "pilot_xds_pushes", "type", "istio.workload.Address")
	for i := range 20 {
		if err := h.srv.Upsert(addressType, workload("Kubernetes//Pod/default/wl-1", ipFor(1), i+1)); err != nil {
			t.Fatal(err)
		}
		if err := h.srv.Upsert(addressType, workload("Kubernetes//Pod/default/burst-"+string(rune('a'+i)), ipFor(100+i), 0)); err != nil {
			t.Fatal(err)
		}
	}
	resp := r.recvAck()
	if len(resp.Resources) != 21 {
		t.Fatalf("one push expected with 21 resources, got %d", len(resp.Resources))
	}
	var a workloadapi.Address
	if err := names(resp)["Kubernetes//Pod/default/wl-1"].Resource.UnmarshalTo(&a); err != nil || a.GetWorkload().CanonicalRevision != "r20" {
		t.Fatalf("latest state did not win: %v %v", a.GetWorkload().GetCanonicalRevision(), err)
	}
	r.expectNothing(100 * time.Millisecond)
	if got := h.counter(t, "pilot_xds_pushes", "type", "istio.workload.Address") - before; got != 1 {
		t.Fatalf("pushes = %v, want 1", got)
	}
}

func TestStopClosesStreams(t *testing.T) {
	h := startServer(t, "127.0.0.1:0", fastOpts(), seedThree)
	r := dialRaw(t, h.addr, testToken)
	r.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: addressType})
	r.recvAck()
	done := make(chan struct{})
	go func() {
		h.srv.Stop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not return")
	}
	if err := r.err(); status.Code(err) != codes.Unavailable {
		t.Fatalf("got %v, want Unavailable", err)
	}
}

// Changes that never pause still go out within DebounceMax.
func TestDebounceMaxDelay(t *testing.T) {
	opts := xdsserver.Options{DebounceQuiet: 20 * time.Millisecond, DebounceMax: 100 * time.Millisecond}
	h := startServer(t, "127.0.0.1:0", opts, seedThree)
	r := dialRaw(t, h.addr, testToken)
	r.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: addressType})
	r.recvAck()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			_ = h.srv.Upsert(addressType, workload("Kubernetes//Pod/default/wl-0", ipFor(0), i))
		}
	}()
	start := time.Now()
	r.recvAck()
	elapsed := time.Since(start)
	close(stop)
	<-done
	if elapsed > 400*time.Millisecond {
		t.Fatalf("first push after %v under constant churn; DebounceMax is 100ms", elapsed)
	}
}

// TestPushOrderPoliciesAroundAddresses: changes that land in one push go
// out with policy upserts before addresses and policy removals after them,
// whatever order the controller made them in, so a client never holds a
// workload naming a policy it lacks.
func TestPushOrderPoliciesAroundAddresses(t *testing.T) {
	// A long quiet period puts both updates of each step in one push.
	h := startServer(t, "127.0.0.1:0", xdsserver.Options{DebounceQuiet: 100 * time.Millisecond, DebounceMax: time.Second}, seedThree)
	r := dialRaw(t, h.addr, testToken)
	r.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: addressType})
	r.recvAck()
	r.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: authzType})
	r.recvAck()

	type push struct {
		typeURL          string
		upserts, removed int
	}
	expect := func(step string, want ...push) {
		t.Helper()
		for i, w := range want {
			resp := r.recvAck()
			if got := (push{resp.TypeUrl, len(resp.Resources), len(resp.RemovedResources)}); got != w {
				t.Fatalf("%s: push %d is %+v, want %+v", step, i, got, w)
			}
		}
		r.expectNothing(200 * time.Millisecond)
	}
	// Addresses changed first, then a policy added.
	if err := h.srv.Update(addressType, workloads(3, 1)); err != nil {
		t.Fatal(err)
	}
	if err := h.srv.Update(authzType, []xdsserver.Resource{policy("p1"), policy("p2")}); err != nil {
		t.Fatal(err)
	}
	expect("add", push{authzType, 1, 0}, push{addressType, 3, 0})

	// A policy changed and another removed, then addresses changed.
	p2 := policy("p2")
	p2.Body.(*security.Authorization).Action = security.Action_ALLOW
	if err := h.srv.Update(authzType, []xdsserver.Resource{p2}); err != nil {
		t.Fatal(err)
	}
	if err := h.srv.Update(addressType, workloads(3, 2)); err != nil {
		t.Fatal(err)
	}
	expect("change and remove", push{authzType, 1, 0}, push{addressType, 3, 0}, push{authzType, 0, 1})
}

// TestStreamLimits: a stream that watches too many types, subscribes to
// too many names of one, or claims to hold more than MaxKeys beyond what
// is served, ends with ResourceExhausted; one within the limits is served.
func TestStreamLimits(t *testing.T) {
	opts := fastOpts()
	opts.MaxKeys = 10
	h := startServer(t, "127.0.0.1:0", opts, seedThree)
	names := func(n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf("key-%d", i))
		}
		return out
	}
	versions := func(n int) map[string]string {
		out := map[string]string{}
		for _, k := range names(n) {
			out[k] = "v"
		}
		return out
	}
	ended := func(r *rawStream) error {
		t.Helper()
		for {
			select {
			case err := <-r.errs:
				return err
			case <-r.resps:
			case <-time.After(5 * time.Second):
				t.Fatal("stream still open")
			}
		}
	}
	for _, tc := range []struct {
		name string
		reqs []*discoveryv3.DeltaDiscoveryRequest
	}{
		{"too many names", []*discoveryv3.DeltaDiscoveryRequest{{TypeUrl: addressType, ResourceNamesSubscribe: names(11)}}},
		{"too many names over two requests", []*discoveryv3.DeltaDiscoveryRequest{
			{TypeUrl: addressType, ResourceNamesSubscribe: names(6)}, {TypeUrl: addressType, ResourceNamesSubscribe: names(12)[6:]}}},
		// MaxKeys beyond the 3 addresses served.
		{"too many held versions", []*discoveryv3.DeltaDiscoveryRequest{{TypeUrl: addressType, InitialResourceVersions: versions(14)}}},
		{"too many types", func() []*discoveryv3.DeltaDiscoveryRequest {
			var reqs []*discoveryv3.DeltaDiscoveryRequest
			for i := range 33 {
				reqs = append(reqs, &discoveryv3.DeltaDiscoveryRequest{TypeUrl: fmt.Sprintf("type.googleapis.com/made.up.T%d", i)})
			}
			return reqs
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := dialRaw(t, h.addr, testToken)
			for _, req := range tc.reqs {
				r.send(req)
			}
			if err := ended(r); status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("stream ended with %v, want ResourceExhausted", err)
			}
		})
	}
	t.Run("within the limits", func(t *testing.T) {
		r := dialRaw(t, h.addr, testToken)
		r.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: addressType, InitialResourceVersions: versions(13)})
		if resp := r.recvAck(); resp.TypeUrl != addressType {
			t.Fatalf("response %v", resp)
		}
	})
}
