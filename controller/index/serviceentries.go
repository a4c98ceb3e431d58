package index

import (
	"fmt"
	"net/netip"
	"strings"

	"google.golang.org/protobuf/types/known/wrapperspb"
	networkingapi "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"

	"github.com/zmesh/zmesh/pkg/workloadapi"
)

// buildServiceEntryServices publishes one Service per host of each
// ServiceEntry, in the ServiceEntry's namespace. A host already published
// in that namespace (by a Service or an earlier ServiceEntry) is a Problem
// and keeps its first owner.
func (b *builder) buildServiceEntryServices() {
	for _, se := range b.serviceEntries {
		var addrs []*workloadapi.NetworkAddress
		for _, a := range se.Spec.Addresses {
			p, err := parseCIDR(a)
			if err != nil {
				continue
			}
			na := &workloadapi.NetworkAddress{Network: b.cfg.Network, Address: p.Addr().AsSlice()}
			if strings.Contains(a, "/") {
				l := uint32(p.Bits())
				na.Length = &l
			}
			addrs = append(addrs, na)
		}
		var ports []*workloadapi.Port
		var sps []servicePort
		for _, p := range se.Spec.Ports {
			target := p.TargetPort
			if target == 0 {
				target = p.Number
			}
			ports = append(ports, &workloadapi.Port{
				ServicePort: p.Number,
				TargetPort:  p.TargetPort,
				AppProtocol: protocolByName(p.Protocol),
			})
			sps = append(sps, servicePort{port: p.Number, name: p.Name, targetNum: target})
		}
		bound := b.resolveWaypoint(bindService, kindServiceEntry, se.Namespace, se.Name, se.Labels, "")
		b.serviceBindings[kindServiceEntry+"/"+se.Namespace+"/"+se.Name] = bound
		waypoint := bound.addr
		ingress := b.ingressUseWaypoint(se.Namespace, se.Labels)
		for _, host := range se.Spec.Hosts {
			key := se.Namespace + "/" + host
			if _, dup := b.out.Services[key]; dup {
				b.problem(kindServiceEntry, se.Namespace, se.Name, fmt.Sprintf("host %q is already published in namespace %s; skipped", host, se.Namespace))
				continue
			}
			b.out.Services[key] = &workloadapi.Service{
				Name:               se.Name,
				Namespace:          se.Namespace,
				Hostname:           host,
				Addresses:          addrs,
				Ports:              ports,
				SubjectAltNames:    append([]string(nil), se.Spec.SubjectAltNames...),
				Waypoint:           waypoint,
				IngressUseWaypoint: ingress,
			}
			info := &serviceInfo{key: key, fromServiceEntry: true, ports: sps}
			if sel := se.Spec.GetWorkloadSelector().GetLabels(); len(sel) > 0 {
				info.selector = sel
				b.selectingServices[se.Namespace] = append(b.selectingServices[se.Namespace], info)
			}
			b.seInfos = append(b.seInfos, seHost{se: se, info: info})
		}
	}
}

// seHost ties a published ServiceEntry host to its entry.
type seHost struct {
	se   *networkingv1.ServiceEntry
	info *serviceInfo
}

// buildServiceEntryWorkloads publishes one Workload per inline endpoint
// (or per host for a DNS-resolved ServiceEntry without endpoints).
// An endpoint's labels are the ServiceEntry's overlaid with its own, except
// for waypoint binding, which reads the endpoint's labels only (as Istio).
func (b *builder) buildServiceEntryWorkloads() {
	hosts := map[*networkingv1.ServiceEntry][]*serviceInfo{}
	for _, h := range b.seInfos {
		hosts[h.se] = append(hosts[h.se], h.info)
	}
	for _, se := range b.serviceEntries {
		if len(se.Spec.Endpoints) == 0 && se.Spec.WorkloadSelector == nil &&
			(se.Spec.Resolution == networkingapi.ServiceEntry_DNS || se.Spec.Resolution == networkingapi.ServiceEntry_DNS_ROUND_ROBIN) {
			b.dnsEndpointWorkloads(se, hosts[se])
			continue
		}
		seen := map[string]bool{}
		for _, ep := range se.Spec.Endpoints {
			if seen[ep.Address] {
				b.problem(kindServiceEntry, se.Namespace, se.Name, fmt.Sprintf("endpoint address %q is repeated; only the first is used", ep.Address))
				continue
			}
			seen[ep.Address] = true
			labels := mergeLabels(se.Labels, ep.Labels)
			w := b.entryWorkload(entryWorkloadSpec{
				uid:         b.cfg.ClusterID + "/" + networkingGroupPrefix + kindServiceEntry + "/" + se.Namespace + "/" + se.Name + "/" + ep.Address,
				kind:        kindServiceEntry,
				name:        se.Name,
				ns:          se.Namespace,
				labels:      labels,
				bindLabels:  ep.Labels,
				annotations: se.Annotations,
				entry:       ep,
			})
			w.Services = make(map[string]*workloadapi.PortList, len(hosts[se]))
			for _, info := range hosts[se] {
				w.Services[info.key] = entryPorts(info, ep.Ports)
			}
			b.out.Workloads[w.Uid] = w
		}
	}
}

// dnsEndpointWorkloads publishes the implicit endpoints of a DNS-resolved
// ServiceEntry without endpoints: one hostname Workload per published host,
// member of that host's Service only.
func (b *builder) dnsEndpointWorkloads(se *networkingv1.ServiceEntry, hosts []*serviceInfo) {
	for _, info := range hosts {
		host := strings.TrimPrefix(info.key, se.Namespace+"/")
		w := b.entryWorkload(entryWorkloadSpec{
			uid:         b.cfg.ClusterID + "/" + networkingGroupPrefix + kindServiceEntry + "/" + se.Namespace + "/" + se.Name + "/" + host,
			kind:        kindServiceEntry,
			name:        se.Name,
			ns:          se.Namespace,
			labels:      se.Labels,
			annotations: se.Annotations,
			entry:       &networkingapi.WorkloadEntry{Address: host},
			unbound:     true,
		})
		w.Services = map[string]*workloadapi.PortList{info.key: entryPorts(info, nil)}
		b.out.Workloads[w.Uid] = w
	}
}

// buildWorkloadEntryWorkloads publishes WorkloadEntries. Their labels are
// metadata.labels overlaid with spec.labels; Services and ServiceEntries of
// the namespace select them by those.
func (b *builder) buildWorkloadEntryWorkloads() {
	for _, we := range b.workloadEntries {
		labels := mergeLabels(we.Labels, we.Spec.Labels)
		w := b.entryWorkload(entryWorkloadSpec{
			uid:         b.cfg.ClusterID + "/" + networkingGroupPrefix + kindWorkloadEntry + "/" + we.Namespace + "/" + we.Name,
			kind:        kindWorkloadEntry,
			name:        we.Name,
			ns:          we.Namespace,
			labels:      labels,
			bindLabels:  labels,
			annotations: we.Annotations,
			entry:       &we.Spec,
		})
		for _, info := range b.selectingServices[we.Namespace] {
			if !selects(info.selector, labels) {
				continue
			}
			if w.Services == nil {
				w.Services = map[string]*workloadapi.PortList{}
			}
			w.Services[info.key] = entryPorts(info, we.Spec.Ports)
		}
		b.out.Workloads[w.Uid] = w
	}
}

type entryWorkloadSpec struct {
	uid, kind, name, ns string
	// labels select policies and give the canonical name and tunnel.
	labels map[string]string
	// bindLabels bind the waypoint: a ServiceEntry's own labels bind its
	// Service, not its endpoints.
	bindLabels  map[string]string
	annotations map[string]string
	entry       *networkingapi.WorkloadEntry
	// unbound workloads never get a waypoint (implicit DNS endpoints).
	unbound bool
}

// entryWorkload fills the Workload fields common to WorkloadEntries and
// ServiceEntry endpoints (all but services). Such a workload is HBONE when
// annotated as captured, labelled ambient, or labelled as a native HBONE
// speaker (networking.istio.io/tunnel=http).
func (b *builder) entryWorkload(s entryWorkloadSpec) *workloadapi.Workload {
	e := s.entry
	w := &workloadapi.Workload{
		Uid:          s.uid,
		Name:         s.name,
		Namespace:    s.ns,
		Network:      b.networkOf(s.ns, s.labels, e.Network),
		TrustDomain:  b.cfg.TrustDomain,
		ClusterId:    b.cfg.ClusterID,
		WorkloadName: s.name,
		WorkloadType: workloadapi.WorkloadType_POD,
	}
	w.ServiceAccount = e.ServiceAccount
	if w.ServiceAccount == "" {
		w.ServiceAccount = serviceAccountDefaultName
	}
	if a, err := netip.ParseAddr(e.Address); err == nil {
		w.Addresses = [][]byte{a.AsSlice()}
	} else {
		w.Hostname = e.Address
	}
	w.CanonicalName, w.CanonicalRevision = canonicalService(s.labels, s.name)
	switch {
	case s.labels[LabelTunnel] == "http":
		w.TunnelProtocol, w.NativeTunnel = workloadapi.TunnelProtocol_HBONE, true
	case s.annotations[AnnotationRedirection] == RedirectionEnabled, s.labels[LabelDataplaneMode] == DataplaneModeAmbient:
		w.TunnelProtocol = workloadapi.TunnelProtocol_HBONE
	}
	if e.Locality != "" {
		parts := strings.SplitN(e.Locality, "/", 3)
		loc := &workloadapi.Locality{Region: parts[0]}
		if len(parts) > 1 {
			loc.Zone = parts[1]
		}
		if len(parts) > 2 {
			loc.Subzone = parts[2]
		}
		w.Locality = loc
	}
	if e.Weight > 0 {
		w.Capacity = wrapperspb.UInt32(e.Weight)
	}
	w.AuthorizationPolicies = b.workloadPolicies(s.ns, s.labels)
	if !s.unbound && !b.isWaypointInstance(s.ns, s.labels) {
		w.Waypoint = b.resolveWaypoint(bindWorkload, s.kind, s.ns, s.name, s.bindLabels, w.ServiceAccount).addr
	}
	return w
}
