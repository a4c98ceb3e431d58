package state

import (
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/workloadapi/security"
	"github.com/zmesh/zmesh/pkg/xds"
)

// cartFixture mirrors controller/index's services golden case: cart
// declares 80 and 9090 with named target ports (target_port 0), 7070 with
// a fixed one; cart-1 defines both named ports, cart-2 only "web" (on a
// different port), cart-3 lists 80 with target 0 and is unhealthy.
func cartFixture(t *testing.T) (*State, *workloadapi.Service) {
	st := New(nil)
	cart := svc("shop", "cart", "10.96.1.1", 80, 0, 9090, 0, 7070, 7070)
	cart.Addresses = append(cart.Addresses, &workloadapi.NetworkAddress{Address: ipb("fd00:96::1")})
	cart.SubjectAltNames = []string{"spiffe://cluster.local/ns/shop/sa/cart-legacy"}
	key := svcKey(cart)
	c1 := withServices(pod("shop", "cart-1", "10.244.1.1"), key, 80, 8080, 9090, 9090, 7070, 7070)
	c1.ServiceAccount = "cart"
	c2 := withServices(pod("shop", "cart-2", "10.244.1.2"), key, 80, 8081, 7070, 7070)
	c3 := withServices(pod("shop", "cart-3", "10.244.1.3"), key, 80, 0)
	c3.Status = workloadapi.WorkloadStatus_UNHEALTHY
	// Workloads first: the service arrives after its endpoints.
	applyAddr(t, st, wlUpsert(c1), wlUpsert(c2), wlUpsert(c3))
	applyAddr(t, st, svcUpsert(cart))
	return st, cart
}

func TestServiceEndpointsAndPorts(t *testing.T) {
	st, cart := cartFixture(t)
	s := st.Service(svcKey(cart))
	if s == nil {
		t.Fatal("service not found")
	}
	var uids []string
	for _, ep := range s.Endpoints() {
		uids = append(uids, ep.Workload.GetName())
	}
	if !slices.Equal(uids, []string{"cart-1", "cart-2", "cart-3"}) {
		t.Fatalf("endpoints %v", uids)
	}
	eps := s.Endpoints()
	if got := s.TargetPort(&eps[1], 80); got != 8081 {
		t.Errorf("cart-2 port 80 -> %d, want 8081", got)
	}
	if got := s.TargetPort(&eps[1], 9090); got != 0 {
		t.Errorf("cart-2 cannot serve 9090, got %d", got)
	}
	if got := s.TargetPort(&eps[2], 7070); got != 7070 {
		t.Errorf("cart-3 unlisted 7070 falls back to service target: got %d", got)
	}
	if got := s.TargetPort(&eps[0], 5); got != 0 {
		t.Errorf("undeclared port: got %d", got)
	}

	// Port 80: round robin over the healthy endpoints, each with its port.
	seen := map[string]uint16{}
	for range 4 {
		up, err := st.PickEndpoint(s, 80)
		if err != nil {
			t.Fatal(err)
		}
		seen[up.Workload.GetName()] = up.Port
	}
	if len(seen) != 2 || seen["cart-1"] != 8080 || seen["cart-2"] != 8081 {
		t.Fatalf("port 80 picks %v", seen)
	}
	// Port 9090: only cart-1 defines the named port.
	for range 3 {
		up, err := st.PickEndpoint(s, 9090)
		if err != nil || up.Workload.GetName() != "cart-1" || up.Port != 9090 {
			t.Fatalf("9090 -> %v %v", up.Workload.GetName(), err)
		}
		if !slices.Equal(up.Identities, []string{"spiffe://cluster.local/ns/shop/sa/cart", "spiffe://cluster.local/ns/shop/sa/cart-legacy"}) {
			t.Fatalf("identities %v", up.Identities)
		}
		if len(up.Addrs) != 1 || up.Addrs[0] != netipAddr("10.244.1.1") {
			t.Fatalf("addrs %v", up.Addrs)
		}
	}
	if _, err := st.PickEndpoint(s, 5); !errors.Is(err, ErrUnknownPort) {
		t.Fatalf("undeclared port: %v", err)
	}

	// Taking cart-1 out leaves nobody for 9090.
	applyAddr(t, st, func() xds.Upsert {
		w := clone(st.WorkloadByUID("Kubernetes//Pod/shop/cart-1"))
		w.Status = workloadapi.WorkloadStatus_UNHEALTHY
		return wlUpsert(w)
	}())
	s = st.Service(svcKey(cart))
	if _, err := st.PickEndpoint(s, 9090); !errors.Is(err, ErrNoEndpoint) {
		t.Fatalf("9090 with cart-1 unhealthy: %v", err)
	}
	for range 3 {
		if up, err := st.PickEndpoint(s, 80); err != nil || up.Workload.GetName() != "cart-2" {
			t.Fatalf("unhealthy endpoints must be skipped: %v %v", up.Workload.GetName(), err)
		}
	}
}

func TestUnhealthyAllowAll(t *testing.T) {
	st := New(nil)
	s := svc("ns", "s", "10.96.0.1", 80, 8080)
	w := withServices(pod("ns", "a", "10.244.0.1"), svcKey(s), 80, 8080)
	w.Status = workloadapi.WorkloadStatus_UNHEALTHY
	applyAddr(t, st, svcUpsert(s), wlUpsert(w))
	if _, err := st.PickEndpoint(st.Service(svcKey(s)), 80); !errors.Is(err, ErrNoEndpoint) {
		t.Fatalf("unhealthy only: %v", err)
	}
	s2 := clone(s)
	s2.LoadBalancing = &workloadapi.LoadBalancing{HealthPolicy: workloadapi.LoadBalancing_ALLOW_ALL}
	applyAddr(t, st, svcUpsert(s2))
	if up, err := st.PickEndpoint(st.Service(svcKey(s)), 80); err != nil || up.Port != 8080 {
		t.Fatalf("ALLOW_ALL: %v %v", up, err)
	}
	// An endpoint without any address is unreachable.
	w2 := withServices(pod("ns", "b", "10.244.0.2"), svcKey(s), 80, 8080)
	w2.Addresses = nil
	applyAddr(t, st, wlUpsert(w2), func() xds.Upsert { x := clone(w); x.Status = 0; x.Services = nil; return wlUpsert(x) }())
	if _, err := st.PickEndpoint(st.Service(svcKey(s)), 80); !errors.Is(err, ErrNoEndpoint) {
		t.Fatalf("address-less endpoint picked: %v", err)
	}
}

func TestDestinationLookups(t *testing.T) {
	st, cart := cartFixture(t)
	other := pod("shop", "net2", "10.244.1.1")
	other.Network = "net2"
	applyAddr(t, st, wlUpsert(other))
	tests := []struct {
		name     string
		network  string
		ip       string
		wantKind TargetKind
		want     string
	}{
		{"v4 vip", "", "10.96.1.1", TargetService, svcKey(cart)},
		{"v6 vip", "", "fd00:96::1", TargetService, svcKey(cart)},
		{"pod ip", "", "10.244.1.2", TargetWorkload, "Kubernetes//Pod/shop/cart-2"},
		{"mapped pod ip", "", "::ffff:10.244.1.2", TargetWorkload, "Kubernetes//Pod/shop/cart-2"},
		{"other network same ip", "net2", "10.244.1.1", TargetWorkload, "Kubernetes//Pod/shop/net2"},
		{"vip on other network", "net2", "10.96.1.1", TargetUnknown, ""},
		{"unknown", "", "192.0.2.1", TargetUnknown, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := st.Destination(tt.network, netipAddr(tt.ip), 80)
			if got.Kind != tt.wantKind || got.Port != 80 {
				t.Fatalf("kind %v port %d, want %v", got.Kind, got.Port, tt.wantKind)
			}
			switch got.Kind {
			case TargetService:
				if got.Service.Key != tt.want || st.ServiceByAddr(tt.network, netipAddr(tt.ip)) != got.Service {
					t.Fatalf("service %s", got.Service.Key)
				}
			case TargetWorkload:
				if got.Workload.GetUid() != tt.want || st.WorkloadByAddr(tt.network, netipAddr(tt.ip)) != got.Workload {
					t.Fatalf("workload %s", got.Workload.GetUid())
				}
				if len(got.Identities) != 1 || got.Identities[0] != Identity(got.Workload) {
					t.Fatalf("identities %v", got.Identities)
				}
			}
		})
	}
}

func TestAddressConflictsAndHostNetwork(t *testing.T) {
	st := New(nil)
	pd := pod("ns", "p", "10.244.0.1")
	pd.TunnelProtocol = workloadapi.TunnelProtocol_NONE
	entry := &workloadapi.Workload{Uid: "Kubernetes/networking.istio.io/WorkloadEntry/ns/we", Name: "we", Namespace: "ns",
		Addresses: [][]byte{ipb("10.244.0.1")}, TunnelProtocol: workloadapi.TunnelProtocol_HBONE}
	host := pod("ns", "h", "172.30.0.1")
	host.NetworkMode = workloadapi.NetworkMode_HOST_NETWORK
	applyAddr(t, st, wlUpsert(entry), wlUpsert(pd), wlUpsert(host))
	if got := st.WorkloadByAddr("", netipAddr("10.244.0.1")); got != pd {
		t.Fatalf("pod must win an address conflict, got %s", got.GetUid())
	}
	applyAddr(t, st) // no-op
	if rej := st.AddressHandler().HandleDelta(xds.Delta{Removals: []string{pd.Uid}}); len(rej) != 0 {
		t.Fatal(rej)
	}
	if got := st.WorkloadByAddr("", netipAddr("10.244.0.1")); got != entry {
		t.Fatalf("after removing the pod: %v", got.GetUid())
	}
	if st.WorkloadByAddr("", netipAddr("172.30.0.1")) != nil || st.WorkloadByUID(host.Uid) == nil {
		t.Fatal("host-network workload must be known by uid only")
	}
}

func TestRemovals(t *testing.T) {
	st, cart := cartFixture(t)
	key := svcKey(cart)
	pol := &security.Authorization{Name: "p", Namespace: "shop"}
	st.AuthorizationHandler().HandleDelta(xds.Delta{Upserts: []xds.Upsert{polUpsert(pol)}})

	h := st.AddressHandler()
	h.HandleDelta(xds.Delta{Removals: []string{"Kubernetes//Pod/shop/cart-2", "unknown/thing", "/10.244.1.1"}})
	if st.WorkloadByUID("Kubernetes//Pod/shop/cart-2") != nil || st.WorkloadByAddr("", netipAddr("10.244.1.2")) != nil {
		t.Fatal("workload not removed")
	}
	if n := len(st.Service(key).Endpoints()); n != 2 {
		t.Fatalf("endpoints after removal: %d", n)
	}
	h.HandleDelta(xds.Delta{Removals: []string{key}})
	if st.Service(key) != nil || st.ServiceByAddr("", netipAddr("10.96.1.1")) != nil || st.ServiceByAddr("", netipAddr("fd00:96::1")) != nil {
		t.Fatal("service not removed")
	}
	if st.WorkloadByUID("Kubernetes//Pod/shop/cart-1") == nil {
		t.Fatal("service removal removed a workload")
	}
	// Re-adding the service finds the remaining members again.
	applyAddr(t, st, svcUpsert(cart))
	if n := len(st.Service(key).Endpoints()); n != 2 {
		t.Fatalf("endpoints after re-add: %d", n)
	}
	// A workload leaving the service (services map changed).
	w := clone(st.WorkloadByUID("Kubernetes//Pod/shop/cart-1"))
	w.Services = nil
	applyAddr(t, st, wlUpsert(w))
	if n := len(st.Service(key).Endpoints()); n != 1 {
		t.Fatalf("endpoints after leaving: %d", n)
	}
	st.AuthorizationHandler().HandleDelta(xds.Delta{Removals: []string{"shop/p", "shop/unknown"}})
	if st.Policies().Len() != 0 {
		t.Fatal("policy not removed")
	}
}

func TestVIPChange(t *testing.T) {
	st, cart := cartFixture(t)
	moved := clone(cart)
	moved.Addresses = []*workloadapi.NetworkAddress{{Address: ipb("10.96.9.9"), Network: "net1"}}
	applyAddr(t, st, svcUpsert(moved))
	if st.ServiceByAddr("", netipAddr("10.96.1.1")) != nil {
		t.Fatal("old VIP still indexed")
	}
	if s := st.ServiceByAddr("net1", netipAddr("10.96.9.9")); s == nil || len(s.Endpoints()) != 3 {
		t.Fatal("new VIP not indexed with endpoints")
	}
	// Two services on one VIP: canonical wins.
	dup := svc("shop", "dup", "10.96.9.9", 80, 80)
	dup.Addresses[0].Network = "net1"
	dup.Canonical = true
	applyAddr(t, st, svcUpsert(dup))
	if s := st.ServiceByAddr("net1", netipAddr("10.96.9.9")); s.Key != svcKey(dup) {
		t.Fatalf("canonical service must win the VIP, got %s", s.Key)
	}
}

func TestSubscribe(t *testing.T) {
	st := New(nil)
	var n atomic.Int32
	cancel := st.Subscribe(func() { n.Add(1) })
	applyAddr(t, st, wlUpsert(pod("ns", "a", "10.244.0.1")))
	st.AuthorizationHandler().HandleDelta(xds.Delta{Upserts: []xds.Upsert{polUpsert(&security.Authorization{Name: "p", Namespace: "ns"})}})
	st.AddressHandler().HandleDelta(xds.Delta{Removals: []string{"nothing"}})                                       // no change
	st.AddressHandler().HandleDelta(xds.Delta{Upserts: []xds.Upsert{{Name: "x", Message: &workloadapi.Address{}}}}) // rejected only
	if got := n.Load(); got != 2 {
		t.Fatalf("notifications = %d, want 2", got)
	}
	cancel()
	applyAddr(t, st, wlUpsert(pod("ns", "b", "10.244.0.2")))
	if got := n.Load(); got != 2 {
		t.Fatalf("notified after cancel")
	}
}

// TestAtomicDeltas checks under -race that readers see a delta entirely or
// not at all: every delta rewrites all workloads with one revision.
func TestAtomicDeltas(t *testing.T) {
	st := New(nil)
	const n = 20
	delta := func(rev string) []xds.Upsert {
		var ups []xds.Upsert
		for i := range n {
			w := pod("ns", "w"+string(rune('a'+i)), "10.244.0."+itoa(i+1))
			w.CanonicalRevision = rev
			ups = append(ups, wlUpsert(w))
		}
		return ups
	}
	applyAddr(t, st, delta("r0")...)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var failures atomic.Int32
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				d, err := st.ConfigDump()
				if err != nil {
					failures.Add(1)
					return
				}
				revs := map[string]bool{}
				for _, raw := range d.Workloads {
					var w struct {
						CanonicalRevision string `json:"canonicalRevision"`
					}
					if err := json.Unmarshal(raw, &w); err != nil {
						failures.Add(1)
					}
					revs[w.CanonicalRevision] = true
				}
				if len(revs) != 1 || len(d.Workloads) != n {
					failures.Add(1)
				}
			}
		})
	}
	for i := range 200 {
		applyAddr(t, st, delta("r"+itoa(i))...)
	}
	close(stop)
	wg.Wait()
	if failures.Load() > 0 {
		t.Fatalf("%d torn reads", failures.Load())
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

func TestConfigDump(t *testing.T) {
	st, _ := cartFixture(t)
	st.AuthorizationHandler().HandleDelta(xds.Delta{Upserts: []xds.Upsert{polUpsert(&security.Authorization{Name: "p", Namespace: "shop", Action: security.Action_DENY})}})
	d, err := st.ConfigDump()
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Workloads []map[string]any `json:"workloads"`
		Services  []struct {
			Service    map[string]any `json:"service"`
			Endpoints  []string       `json:"endpoints"`
			Candidates []string       `json:"candidates"`
		} `json:"services"`
		Policies []map[string]any `json:"policies"`
	}
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Workloads) != 3 || len(back.Services) != 1 || len(back.Policies) != 1 {
		t.Fatalf("dump sizes %d/%d/%d", len(back.Workloads), len(back.Services), len(back.Policies))
	}
	if back.Services[0].Service["hostname"] != "cart.shop.svc.cluster.local" || len(back.Services[0].Endpoints) != 3 || len(back.Services[0].Candidates) != 2 {
		t.Fatalf("service dump %+v", back.Services[0])
	}
	if back.Policies[0]["action"] != "DENY" {
		t.Fatalf("policy dump %v", back.Policies[0])
	}
}

func TestIdentity(t *testing.T) {
	w := &workloadapi.Workload{Namespace: "ns1"}
	if got := Identity(w); got != "spiffe://cluster.local/ns/ns1/sa/default" {
		t.Fatal(got)
	}
	w.TrustDomain, w.ServiceAccount = "example.org", "web"
	if got := Identity(w); got != "spiffe://example.org/ns/ns1/sa/web" {
		t.Fatal(got)
	}
	s := &workloadapi.Service{SubjectAltNames: []string{"spiffe://example.org/ns/ns1/sa/web", "spiffe://other/ns/x/sa/y", ""}}
	got := ExpectedIdentities(s, w)
	if !slices.Equal(got, []string{"spiffe://example.org/ns/ns1/sa/web", "spiffe://other/ns/x/sa/y"}) {
		t.Fatal(got)
	}
	if got := ExpectedIdentities(nil, w); len(got) != 1 {
		t.Fatal(got)
	}
}

func TestLookupsDoNotAllocate(t *testing.T) {
	st, cart := cartFixture(t)
	vip, podIP := netipAddr("10.96.1.1"), netipAddr("10.244.1.2")
	s := st.Service(svcKey(cart))
	allocs := testing.AllocsPerRun(1000, func() {
		tg := st.Destination("", vip, 80)
		if _, err := st.PickEndpoint(tg.Service, 80); err != nil {
			t.Fatal(err)
		}
		if st.Destination("", podIP, 80).Kind != TargetWorkload || st.WorkloadByUID("Kubernetes//Pod/shop/cart-1") == nil {
			t.Fatal("lookup failed")
		}
		if st.Service(s.Key) == nil || st.ServiceByAddr("", vip) == nil || st.WorkloadByAddr("", podIP) == nil {
			t.Fatal("lookup failed")
		}
	})
	if allocs != 0 {
		t.Fatalf("lookups allocate: %v", allocs)
	}
}
