package app

import (
	"net/netip"
	"testing"

	"github.com/zmesh/zmesh/pkg/xds"
	"github.com/zmesh/zmesh/ztunnel/authz"
	"github.com/zmesh/zmesh/ztunnel/proxy"
	"github.com/zmesh/zmesh/ztunnel/state"
)

// TestAuthorizerWaitsForPolicies: until the first Authorization response
// is applied, inbound connections are refused (503) even to a known
// workload with no policy, which would otherwise be allowed.
func TestAuthorizerWaitsForPolicies(t *testing.T) {
	st := state.New(nil)
	const uid = "reviews"
	if rej := st.AddressHandler().HandleDelta(xds.Delta{Upserts: []xds.Upsert{{Name: uid,
		Message: workload(uid, "reviews", reviewsIP, 0, nil, nil)}}}); len(rej) > 0 {
		t.Fatal(rej)
	}
	synced := make(chan struct{})
	eng := authz.NewEngine(st, nil)
	a := &authorizer{state: st, engine: eng, tracker: authz.NewTracker(eng, nil), policiesSynced: synced}
	pod := &proxy.PodInfo{UID: uid}
	c := proxy.Conn{Src: netip.AddrPortFrom(sleepIP, 40000), Dst: netip.AddrPortFrom(reviewsIP, 9080)}
	if v := a.Authorize(pod, c); v.Allow || !v.UnknownDestination {
		t.Fatalf("before the policies arrived: %+v", v)
	}
	close(synced)
	if v := a.Authorize(pod, c); !v.Allow || v.Reason != string(authz.ReasonNoAllowPolicy) {
		t.Fatalf("after: %+v", v)
	}
}
