package state

import (
	"net/netip"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/workloadapi/security"
	"github.com/zmesh/zmesh/pkg/xds"
)

// FuzzAddressHandler feeds arbitrary Address bytes through the handler
// (under the name the resource should have and under an arbitrary one),
// then exercises every lookup and removal. Nothing may panic, and a
// rejected resource must leave no trace.
func FuzzAddressHandler(f *testing.F) {
	seed := func(a *workloadapi.Address) {
		b, err := proto.Marshal(a)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "")
	}
	s := svc("ns", "s", "10.96.0.1", 80, 0, 90, 9090)
	seed(&workloadapi.Address{Type: &workloadapi.Address_Service{Service: s}})
	w := withServices(pod("ns", "a", "10.244.0.1"), svcKey(s), 80, 8080)
	w.Waypoint = &workloadapi.GatewayAddress{Destination: &workloadapi.GatewayAddress_Address{Address: &workloadapi.NetworkAddress{Address: ipb("10.96.0.9")}}, HboneMtlsPort: 15008}
	seed(&workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: w}})
	legacy := pod("ns", "b", "fd00::1")
	legacy.TunnelProtocol = workloadapi.TunnelProtocol_LEGACY_ISTIO_MTLS
	seed(&workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: legacy}})
	f.Add([]byte{0x0a, 0x03, 0xa2, 0x01, 0x00}, "x")

	f.Fuzz(func(t *testing.T, data []byte, altName string) {
		a := &workloadapi.Address{}
		if err := proto.Unmarshal(data, a); err != nil {
			return
		}
		name := altName
		if name == "" {
			if a.GetWorkload() != nil {
				name = a.GetWorkload().GetUid()
			} else {
				name = svcKey(a.GetService())
			}
		}
		st := New(nil)
		// A valid sibling shares the delta.
		sib := pod("ns", "sibling", "10.244.9.9")
		rej := st.AddressHandler().HandleDelta(xds.Delta{Upserts: []xds.Upsert{wlUpsert(sib), {Name: name, Message: a}}})
		if st.WorkloadByUID(sib.Uid) == nil {
			t.Fatal("valid sibling lost")
		}
		if len(rej) > 1 || (len(rej) == 1 && rej[0].Name != name) {
			t.Fatalf("unexpected rejections %v", rej)
		}
		accepted := len(rej) == 0
		var addrs []netip.Addr
		for _, b := range a.GetWorkload().GetAddresses() {
			if ip, ok := netip.AddrFromSlice(b); ok {
				addrs = append(addrs, ip)
			}
		}
		for _, na := range a.GetService().GetAddresses() {
			if ip, ok := netip.AddrFromSlice(na.GetAddress()); ok {
				addrs = append(addrs, ip)
			}
		}
		network := a.GetWorkload().GetNetwork()
		if len(a.GetService().GetAddresses()) > 0 {
			network = a.GetService().GetAddresses()[0].GetNetwork()
		}
		for _, ip := range addrs {
			tg := st.Destination(network, ip, 80)
			if !accepted && tg.Kind != TargetUnknown && tg.Workload != sib {
				t.Fatalf("rejected resource visible at %s", ip)
			}
			if tg.Service != nil {
				for _, p := range tg.Service.Spec.GetPorts() {
					_, _ = st.PickEndpoint(tg.Service, uint16(p.GetServicePort()))
				}
			}
			_ = st.WorkloadByAddr(network, ip)
			_ = st.ServiceByAddr(network, ip)
		}
		if _, err := st.ConfigDump(); err != nil {
			t.Fatal(err)
		}
		st.AddressHandler().HandleDelta(xds.Delta{Removals: []string{name}})
		if st.WorkloadByUID(name) != nil || st.Service(name) != nil {
			t.Fatal("not removed")
		}
		for _, ip := range addrs {
			if tg := st.Destination(network, ip, 80); tg.Kind != TargetUnknown && tg.Workload != sib {
				t.Fatalf("removed resource still visible at %s", ip)
			}
		}
	})
}

// FuzzAuthorizationHandler: arbitrary Authorization bytes never panic and
// are either applied or rejected alone.
func FuzzAuthorizationHandler(f *testing.F) {
	p := &security.Authorization{Name: "p", Namespace: "ns", Action: security.Action_DENY, Groups: []*security.Group{{Rules: []*security.Rules{{Matches: []*security.Match{{
		SourceIps: []*security.Address{{Address: ipb("10.0.0.0"), Length: 8}}, DestinationPorts: []uint32{80},
	}}}}}}}
	b, err := proto.Marshal(p)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		a := &security.Authorization{}
		if err := proto.Unmarshal(data, a); err != nil {
			return
		}
		st := New(nil)
		name := a.GetNamespace() + "/" + a.GetName()
		rej := st.AuthorizationHandler().HandleDelta(xds.Delta{Upserts: []xds.Upsert{{Name: name, Message: a}}})
		if (len(rej) == 0) != (st.Policies().Get(name) == a) {
			t.Fatalf("rejections %v inconsistent with state", rej)
		}
	})
}
