package xdsserver_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/zmesh/zmesh/controller/xdsserver"
	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/xds"
)

// cache is a Handler keeping what it applied; reject names upserts to refuse.
type cache struct {
	mu      sync.Mutex
	items   map[string]*workloadapi.Address
	reject  map[string]bool
	deltas  int
	changed chan struct{}
}

func newCache(reject ...string) *cache {
	c := &cache{items: make(map[string]*workloadapi.Address), reject: make(map[string]bool), changed: make(chan struct{}, 1)}
	for _, r := range reject {
		c.reject[r] = true
	}
	return c
}

func (c *cache) HandleDelta(d xds.Delta) []xds.Rejection {
	c.mu.Lock()
	defer c.mu.Unlock()
	var rej []xds.Rejection
	for _, u := range d.Upserts {
		if c.reject[u.Name] {
			rej = append(rej, xds.Rejection{Name: u.Name, Err: errors.New("refused by test")})
			continue
		}
		c.items[u.Name] = u.Message.(*workloadapi.Address)
	}
	for _, n := range d.Removals {
		delete(c.items, n)
	}
	c.deltas++
	select {
	case c.changed <- struct{}{}:
	default:
	}
	return rej
}

func (c *cache) get(name string) *workloadapi.Address {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.items[name]
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.items)
}

// waitFor polls cond until it holds or 10s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func startClient(t testing.TB, addr string, h xds.Handler, mode xds.Mode) *xds.Client {
	t.Helper()
	c, err := xds.New(xds.Config{
		Address:     addr,
		DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
		Node:        xds.Node{IP: "10.0.0.9", PodName: "ztunnel-x", Namespace: "istio-system", NodeName: "node1"},
		ClusterID:   "Kubernetes",
		Token:       func(context.Context) (string, error) { return testToken, nil },
		Types: []xds.TypeConfig{{
			TypeURL: addressType,
			New:     func() proto.Message { return new(workloadapi.Address) },
			Handler: h,
			Mode:    mode,
		}},
		Backoff: xds.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
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

func waitSynced(t testing.TB, c *xds.Client) {
	t.Helper()
	select {
	case <-c.Synced(addressType):
	case <-time.After(10 * time.Second):
		t.Fatal("client never synced")
	}
}

func TestNACKCountedStreamContinues(t *testing.T) {
	h := startServer(t, "127.0.0.1:0", fastOpts(), seedThree)
	bad := "Kubernetes//Pod/default/wl-1"
	cache := newCache(bad)
	c := startClient(t, h.addr, cache, xds.Wildcard)
	waitSynced(t, c)
	if cache.len() != 2 || cache.get(bad) != nil {
		t.Fatalf("applied %d resources; the valid two should be applied, %s refused", cache.len(), bad)
	}
	label := []string{"type", "istio.workload.Address"}
	waitFor(t, "the NACK to be counted", func() bool { return h.counter(t, "pilot_total_xds_rejects", label...) == 1 })

	// No resend loop: the rejected version is not pushed again.
	pushes := h.counter(t, "pilot_xds_pushes", label...)
	time.Sleep(150 * time.Millisecond)
	if got := h.counter(t, "pilot_xds_pushes", label...); got != pushes {
		t.Fatalf("server pushed %v more times after the NACK", got-pushes)
	}

	// The stream lives on: a later change is applied.
	if err := h.srv.Upsert(addressType, workload("Kubernetes//Pod/default/wl-0", ipFor(0), 9)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the later change", func() bool {
		w := cache.get("Kubernetes//Pod/default/wl-0")
		return w != nil && w.GetWorkload().CanonicalRevision == "r9"
	})
	if got := h.counter(t, "pilot_total_xds_rejects", label...); got != 1 {
		t.Fatalf("rejects = %v, want 1", got)
	}
}

// A client that stops reading must neither block pushes to others nor make
// the server queue every push for it: once it reads again it gets the
// latest state.
func TestSlowClientDoesNotBlockOthers(t *testing.T) {
	const n = 2000
	big := func(rev int) []xdsserver.Resource {
		rs := workloads(n, rev)
		for _, r := range rs {
			// ~2 KiB per resource, so the stalled client's window fills.
			w := r.Body.(*workloadapi.Address).GetWorkload()
			w.AuthorizationPolicies = make([]string, 64)
			for i := range w.AuthorizationPolicies {
				w.AuthorizationPolicies[i] = "default/some-fairly-long-policy-name"
			}
		}
		return rs
	}
	h := startServer(t, "127.0.0.1:0", fastOpts(), func(s *xdsserver.Server) { _ = s.Update(addressType, big(0)) })

	slow := dialRawPaused(t, h.addr, testToken)
	slow.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: addressType})
	// slow reads nothing for now: gRPC flow control stalls the server's
	// sends to it after the first window.
	fast := newCache()
	c := startClient(t, h.addr, fast, xds.Wildcard)
	waitSynced(t, c)

	const revs = 8
	for rev := 1; rev <= revs; rev++ {
		if err := h.srv.Update(addressType, big(rev)); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("r%d", rev)
		start := time.Now()
		waitFor(t, "fast client to apply "+want, func() bool {
			w := fast.get("Kubernetes//Pod/default/wl-7")
			return w != nil && w.GetWorkload().CanonicalRevision == want
		})
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("fast client took %v", d)
		}
	}

	// The slow client catches up with the latest state in fewer responses
	// than there were pushes: its pending changes were coalesced.
	slow.startReading()
	state := make(map[string]string)
	responses := 0
	for state["Kubernetes//Pod/default/wl-7"] != fmt.Sprintf("r%d", revs) {
		resp := slow.recvAck()
		responses++
		for _, r := range resp.Resources {
			var a workloadapi.Address
			if err := r.Resource.UnmarshalTo(&a); err != nil {
				t.Fatal(err)
			}
			state[r.Name] = a.GetWorkload().CanonicalRevision
		}
	}
	t.Logf("slow client caught up in %d responses after %d pushes", responses, revs+1)
	if responses > 4 {
		t.Errorf("slow client got %d responses for %d pushes; want them coalesced", responses, revs+1)
	}
	for name, rev := range state {
		if rev != fmt.Sprintf("r%d", revs) {
			t.Fatalf("%s at %s", name, rev)
		}
	}
	if len(state) != n {
		t.Fatalf("slow client has %d resources, want %d", len(state), n)
	}
}
