package state

import (
	"net/netip"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/workloadapi/security"
	"github.com/zmesh/zmesh/pkg/xds"
)

func ipb(s string) []byte { return netip.MustParseAddr(s).AsSlice() }

// pod returns a HEALTHY HBONE pod workload "Kubernetes//Pod/<ns>/<name>".
func pod(ns, name, ip string) *workloadapi.Workload {
	return &workloadapi.Workload{
		Uid:            "Kubernetes//Pod/" + ns + "/" + name,
		Name:           name,
		Namespace:      ns,
		Addresses:      [][]byte{ipb(ip)},
		TunnelProtocol: workloadapi.TunnelProtocol_HBONE,
		TrustDomain:    "cluster.local",
		ServiceAccount: "default",
		WorkloadType:   workloadapi.WorkloadType_POD,
		ClusterId:      "Kubernetes",
	}
}

func withServices(w *workloadapi.Workload, svcKey string, ports ...uint32) *workloadapi.Workload {
	if w.Services == nil {
		w.Services = map[string]*workloadapi.PortList{}
	}
	pl := &workloadapi.PortList{}
	for i := 0; i+1 < len(ports); i += 2 {
		pl.Ports = append(pl.Ports, &workloadapi.Port{ServicePort: ports[i], TargetPort: ports[i+1]})
	}
	w.Services[svcKey] = pl
	return w
}

// svc returns a service "<ns>/<name>.<ns>.svc.cluster.local" with vip and
// ports given as service/target pairs.
func svc(ns, name, vip string, ports ...uint32) *workloadapi.Service {
	s := &workloadapi.Service{
		Name:      name,
		Namespace: ns,
		Hostname:  name + "." + ns + ".svc.cluster.local",
	}
	if vip != "" {
		s.Addresses = []*workloadapi.NetworkAddress{{Address: ipb(vip)}}
	}
	for i := 0; i+1 < len(ports); i += 2 {
		s.Ports = append(s.Ports, &workloadapi.Port{ServicePort: ports[i], TargetPort: ports[i+1]})
	}
	return s
}

func svcKey(s *workloadapi.Service) string { return s.GetNamespace() + "/" + s.GetHostname() }

func wlUpsert(w *workloadapi.Workload) xds.Upsert {
	return xds.Upsert{Name: w.GetUid(), Version: "1", Message: &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: w}}}
}

func svcUpsert(s *workloadapi.Service) xds.Upsert {
	return xds.Upsert{Name: svcKey(s), Version: "1", Message: &workloadapi.Address{Type: &workloadapi.Address_Service{Service: s}}}
}

func polUpsert(a *security.Authorization) xds.Upsert {
	return xds.Upsert{Name: a.GetNamespace() + "/" + a.GetName(), Version: "1", Message: a}
}

func applyAddr(t testing.TB, st *State, ups ...xds.Upsert) {
	t.Helper()
	if rej := st.AddressHandler().HandleDelta(xds.Delta{TypeURL: workloadapi.AddressTypeURL, Upserts: ups}); len(rej) > 0 {
		t.Fatalf("unexpected rejections: %v", rej)
	}
}

func clone[T proto.Message](m T) T { return proto.Clone(m).(T) }

func netipAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
