package upstream

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func targets(n int) []Target {
	var ts []Target
	for i := range n {
		ts = append(ts, Target{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), 80),
			Identity: spiffeid.RequireFromString("spiffe://cluster.local/ns/a/sa/b")})
	}
	return ts
}

func noDial(context.Context, Target) (net.Conn, error) { return nil, net.ErrClosed }

func TestRoundRobinAndConsistentHash(t *testing.T) {
	m := NewManager(noDial)
	c := m.Cluster(&ClusterConfig{Name: "rr", LB: RoundRobin})
	ts := targets(3)
	for i := range 6 {
		h, err := c.Pick(ts, 0, false, nil)
		if err != nil || h.Target != ts[i%3] {
			t.Fatalf("pick %d: %v %v", i, h, err)
		}
	}
	ch := m.Cluster(&ClusterConfig{Name: "hash", LB: ConsistentHash})
	spread := map[netip.AddrPort]bool{}
	for k := range uint64(50) {
		key := HashString(string(rune('a' + k)))
		first, _ := ch.Pick(ts, key, true, nil)
		spread[first.Target.Addr] = true
		// Removing another host must not move this key.
		var others []Target
		for _, tt := range ts {
			if tt == first.Target || len(others) == 0 {
				others = append(others, tt)
			}
		}
		again, _ := ch.Pick(others, key, true, nil)
		if again.Target != first.Target {
			t.Fatalf("key %d moved from %v to %v", k, first.Target, again.Target)
		}
	}
	if len(spread) != 3 {
		t.Fatalf("50 keys landed on %d hosts", len(spread))
	}
	if _, err := c.Pick(nil, 0, false, nil); !errors.Is(err, ErrNoHealthy) {
		t.Fatalf("no targets: %v", err)
	}
}

func TestOutlierEjectionAndReturn(t *testing.T) {
	now := time.Unix(1000, 0)
	m := NewManager(noDial)
	m.now = func() time.Time { return now }
	c := m.Cluster(&ClusterConfig{Name: "c", LB: RoundRobin, Outlier: &OutlierConfig{Consecutive5xx: 3, Interval: time.Second, BaseEjectionTime: 10 * time.Second, MaxEjectionPercent: 50}})
	ts := targets(2)
	bad, _ := c.Pick(ts, 0, false, nil)
	good, _ := c.Pick(ts, 0, false, nil)
	c.Report(bad, true)
	c.Report(bad, true)
	c.Report(bad, false) // a success resets the streak
	c.Report(bad, true)
	c.Report(bad, true)
	if c.Ejected(bad) {
		t.Fatal("ejected before 3 consecutive failures")
	}
	c.Report(bad, true)
	if !c.Ejected(bad) {
		t.Fatal("not ejected after 3 consecutive failures")
	}
	for range 4 {
		if h, _ := c.Pick(ts, 0, false, nil); h != good {
			t.Fatal("ejected host picked")
		}
	}
	// max_ejection_percent 50: the second host cannot be ejected too.
	for range 5 {
		c.Report(good, true)
	}
	if c.Ejected(good) {
		t.Fatal("ejected beyond max_ejection_percent")
	}
	now = now.Add(11 * time.Second)
	if c.Ejected(bad) {
		t.Fatal("still ejected after base_ejection_time")
	}
	// A second ejection lasts twice as long.
	for range 3 {
		c.Report(bad, true)
	}
	now = now.Add(11 * time.Second)
	if !c.Ejected(bad) {
		t.Fatal("second ejection should last 2 × base_ejection_time")
	}
}

func TestCircuitBreaker(t *testing.T) {
	m := NewManager(noDial)
	c := m.Cluster(&ClusterConfig{Name: "c", MaxConnections: 1, MaxPending: 1, MaxRequests: 3, MaxRetries: 1})
	r1, err1 := c.Acquire(false)
	r2, err2 := c.Acquire(false)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if _, err := c.Acquire(false); !errors.Is(err, ErrOverflow) {
		t.Fatalf("third HTTP/1 request: %v, want overflow", err)
	}
	if r3, err := c.Acquire(true); err != nil { // HTTP/2 is bounded by max_requests (3)
		t.Fatalf("HTTP/2: %v", err)
	} else {
		r3()
	}
	r1()
	r2()
	if rel, ok := c.AcquireRetry(); !ok {
		t.Fatal("first retry refused")
	} else if _, ok := c.AcquireRetry(); ok {
		t.Fatal("second concurrent retry allowed with max_retries 1")
	} else {
		rel()
	}
}

func TestCompileCluster(t *testing.T) {
	cc, err := CompileCluster(&clusterv3.Cluster{Name: "outbound|9080|v1|r.ns.svc.cluster.local", LbPolicy: clusterv3.Cluster_MAGLEV,
		ConnectTimeout:   durationpb.New(time.Second),
		OutlierDetection: &clusterv3.OutlierDetection{Consecutive_5Xx: wrapperspb.UInt32(7)},
		CircuitBreakers:  &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxRequests: wrapperspb.UInt32(5)}}}})
	if err != nil {
		t.Fatal(err)
	}
	if cc.Port != 9080 || cc.Subset != "v1" || cc.Hostname != "r.ns.svc.cluster.local" || cc.LB != ConsistentHash ||
		cc.Outlier.Consecutive5xx != 7 || cc.Outlier.BaseEjectionTime != 30*time.Second || cc.MaxRequests != 5 || cc.MaxConnections != 1024 {
		t.Fatalf("compiled %+v %+v", cc, cc.Outlier)
	}
	for name, c := range map[string]*clusterv3.Cluster{
		"no name":   {},
		"bad port":  {Name: "outbound|x||h"},
		"lb policy": {Name: "c", LbPolicy: clusterv3.Cluster_CLUSTER_PROVIDED},
	} {
		if _, err := CompileCluster(c); err == nil {
			t.Errorf("%s: compiled", name)
		}
	}
}

func TestLeastRequestAvoidsBusyHost(t *testing.T) {
	m := NewManager(noDial)
	c := m.Cluster(&ClusterConfig{Name: "lr", LB: LeastRequest})
	ts := targets(3)
	busy, _ := c.Pick(ts, 0, false, nil)
	for range 5 {
		defer busy.Begin()()
	}
	n := 0
	const picks = 3000
	for range picks {
		if h, _ := c.Pick(ts, 0, false, nil); h == busy {
			n++
		}
	}
	// Two random choices pick the busy host only when both land on it
	// (1/9 ≈ 333 of 3000); round robin would give 1000.
	if n > 500 {
		t.Fatalf("busy host picked %d of %d times", n, picks)
	}
}

// TestEmptyLoadAssignmentMeansNoEndpoints: a subset that selects no pod
// arrives as an empty load_assignment and must not fall back to every
// endpoint of the service; only an absent one does.
func TestEmptyLoadAssignmentMeansNoEndpoints(t *testing.T) {
	for _, tc := range []struct {
		name string
		la   *endpointv3.ClusterLoadAssignment
		want bool
	}{
		{"absent", nil, false},
		{"empty", &endpointv3.ClusterLoadAssignment{ClusterName: "outbound|80|v9|r.ns.svc.cluster.local"}, true},
	} {
		cc, err := CompileCluster(&clusterv3.Cluster{Name: "outbound|80|v9|r.ns.svc.cluster.local", LoadAssignment: tc.la})
		if err != nil {
			t.Fatal(err)
		}
		if cc.HasEndpoints != tc.want || len(cc.Endpoints) != 0 {
			t.Errorf("%s: HasEndpoints %v endpoints %v, want HasEndpoints %v and none", tc.name, cc.HasEndpoints, cc.Endpoints, tc.want)
		}
	}
}
