package authz

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/workloadapi/security"
	"github.com/zmesh/zmesh/pkg/xds"
)

func TestTrackerClosesNowDenied(t *testing.T) {
	w := workload("ns1", "api", "10.244.1.1")
	st, e := newEngine(t, []*workloadapi.Workload{w})
	tr := NewTracker(e, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { tr.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()

	fromNS2 := mtls()
	fromNS2.SrcIdentity = "spiffe://cluster.local/ns/ns2/sa/web"
	closedNS2 := make(chan struct{})
	var closedNS1 atomic.Bool
	tr.Track(mtls(), w.Uid, func() { closedNS1.Store(true) })
	h2 := tr.Track(fromNS2, w.Uid, func() { close(closedNS2) })
	if tr.Len() != 2 {
		t.Fatalf("tracked %d", tr.Len())
	}
	// An address-only change re-checks nothing that matters.
	if rej := st.AddressHandler().HandleDelta(xds.Delta{Upserts: []xds.Upsert{{Name: "Kubernetes//Pod/ns9/x",
		Message: &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: workload("ns9", "x", "10.244.9.9")}}}}}); len(rej) > 0 {
		t.Fatal(rej)
	}
	setPolicies(t, st, pol("ns1", "same-ns", security.Scope_NAMESPACE, security.Action_ALLOW, fromNS1))
	select {
	case <-closedNS2:
	case <-time.After(5 * time.Second):
		t.Fatal("denied connection not closed")
	}
	if closedNS1.Load() {
		t.Fatal("allowed connection closed")
	}
	if tr.Len() != 1 {
		t.Fatalf("tracked %d after close", tr.Len())
	}
	h2.Untrack() // after close: harmless
	// Nothing changed: a re-check closes nothing.
	if n := tr.Recheck(); n != 0 {
		t.Fatalf("recheck closed %d", n)
	}
}

func TestTrackerWorkloadPolicyChange(t *testing.T) {
	w := workload("ns1", "api", "10.244.1.1")
	strict := pol("istio-system", "istio_converted_static_strict", security.Scope_WORKLOAD_SELECTOR, security.Action_DENY,
		grp(any1(&security.Match{NotPrincipals: []*security.StringMatch{presence()}})))
	st, e := newEngine(t, []*workloadapi.Workload{w}, strict)
	tr := NewTracker(e, nil)
	var closedPlain, closedMTLS atomic.Int32
	tr.Track(plaintext(), w.Uid, func() { closedPlain.Add(1) })
	tr.Track(mtls(), w.Uid, func() { closedMTLS.Add(1) })
	if tr.Recheck() != 0 {
		t.Fatal("nothing denied yet")
	}
	// The workload becomes STRICT: only its authorization_policies change.
	w2 := workload("ns1", "api", "10.244.1.1", "istio-system/istio_converted_static_strict")
	if rej := st.AddressHandler().HandleDelta(xds.Delta{Upserts: []xds.Upsert{{Name: w2.Uid,
		Message: &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: w2}}}}}); len(rej) > 0 {
		t.Fatal(rej)
	}
	if n := tr.Recheck(); n != 1 || closedPlain.Load() != 1 || closedMTLS.Load() != 0 {
		t.Fatalf("closed %d: plaintext %d mtls %d", n, closedPlain.Load(), closedMTLS.Load())
	}
	if tr.Recheck() != 0 || closedPlain.Load() != 1 {
		t.Fatal("closed twice")
	}
}

func TestTrackerTrackAfterChange(t *testing.T) {
	// A connection authorized before a policy change but registered after
	// the re-check ran is still caught, by Track itself.
	w := workload("ns1", "api", "10.244.1.1")
	st, e := newEngine(t, []*workloadapi.Workload{w})
	tr := NewTracker(e, nil)
	if v := e.Evaluate(plaintext(), w); !v.Allowed {
		t.Fatal("allowed before")
	}
	setPolicies(t, st, pol("ns1", "deny-all", security.Scope_NAMESPACE, security.Action_DENY, matchAll))
	tr.Recheck()
	var closed atomic.Bool
	h := tr.Track(plaintext(), w.Uid, func() { closed.Store(true) })
	if !closed.Load() || tr.Len() != 0 {
		t.Fatalf("closed %v, tracked %d", closed.Load(), tr.Len())
	}
	h.Untrack()
}

func TestTrackerUntrackAndUnknownWorkload(t *testing.T) {
	w := workload("ns1", "api", "10.244.1.1")
	st, e := newEngine(t, []*workloadapi.Workload{w})
	tr := NewTracker(e, nil)
	var closed atomic.Int32
	h := tr.Track(mtls(), w.Uid, func() { closed.Add(1) })
	tr.Track(mtls(), "Kubernetes//Pod/ns1/gone", func() { closed.Add(1) })
	h.Untrack()
	setPolicies(t, st, pol("ns1", "deny-all", security.Scope_NAMESPACE, security.Action_DENY, matchAll))
	if n := tr.Recheck(); n != 0 || closed.Load() != 0 {
		t.Fatalf("closed %d/%d: untracked or unknown-workload connections must be left alone", n, closed.Load())
	}
	if tr.Len() != 1 {
		t.Fatalf("tracked %d", tr.Len())
	}
}

// TestTrackerConcurrent exercises Track/Untrack/Recheck/updates together
// under the race detector.
func TestTrackerConcurrent(t *testing.T) {
	w := workload("ns1", "api", "10.244.1.1")
	st, e := newEngine(t, []*workloadapi.Workload{w})
	tr := NewTracker(e, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { tr.Run(ctx) })
	var closes atomic.Int32
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				c := mtls()
				if (g+i)%2 == 0 {
					c.SrcIdentity = ""
				}
				h := tr.Track(c, w.Uid, func() { closes.Add(1) })
				if i%3 == 0 {
					h.Untrack()
				}
			}
		})
	}
	for i := range 50 {
		action := security.Action_ALLOW
		if i%2 == 0 {
			action = security.Action_DENY
		}
		setPolicies(t, st, pol("ns1", "p", security.Scope_NAMESPACE, action,
			grp(any1(&security.Match{NotPrincipals: []*security.StringMatch{presence()}}))))
	}
	cancel()
	wg.Wait()
	tr.Recheck()
	if closes.Load() == 0 {
		t.Fatal("no plaintext connection was ever closed")
	}
}
