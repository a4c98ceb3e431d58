package state

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/zmesh/zmesh/pkg/xds"
)

// bigState holds 10,000 workloads in 1,000 services of 10.
func bigState(b *testing.B) *State {
	st := New(nil)
	var ups []xds.Upsert
	for s := range 1000 {
		sv := svc(fmt.Sprintf("ns-%d", s%100), fmt.Sprintf("svc-%d", s), netip.AddrFrom4([4]byte{10, 96, byte(s >> 8), byte(s)}).String(), 80, 8080)
		ups = append(ups, svcUpsert(sv))
		for i := range 10 {
			n := s*10 + i
			w := withServices(pod(sv.Namespace, fmt.Sprintf("p-%d", n), netip.AddrFrom4([4]byte{10, 244, byte(n >> 8), byte(n)}).String()), svcKey(sv), 80, 8080)
			ups = append(ups, wlUpsert(w))
		}
	}
	applyAddr(b, st, ups...)
	return st
}

// BenchmarkAddressDeltaOneWorkload is the cost of applying a one-workload
// delta to a 10,000-workload state (copy-on-write of the indexes).
func BenchmarkAddressDeltaOneWorkload(b *testing.B) {
	st := bigState(b)
	w := clone(st.WorkloadByUID("Kubernetes//Pod/ns-5/p-55"))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		w = clone(w)
		w.CanonicalRevision = fmt.Sprint(i)
		applyAddr(b, st, wlUpsert(w))
	}
}

func BenchmarkDestinationAndPick(b *testing.B) {
	st := bigState(b)
	vip := netip.MustParseAddr("10.96.0.55")
	b.ReportAllocs()
	for b.Loop() {
		tg := st.Destination("", vip, 80)
		if _, err := st.PickEndpoint(tg.Service, 80); err != nil {
			b.Fatal(err)
		}
	}
}
