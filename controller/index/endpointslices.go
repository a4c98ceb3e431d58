package index

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/zmesh/zmesh/pkg/workloadapi"
)

// sliceMembership says a pod backs a selector-less Service through an
// EndpointSlice, with the slice's ports by name.
type sliceMembership struct {
	svc   *serviceInfo
	ports map[string]uint32
}

// indexEndpointSlices maps the endpoints of selector-less Services to pods,
// by the endpoint's Pod targetRef or else by pod IP. Endpoints that are no
// known pod become Workloads of their own, as Istio publishes them
// (uid "<cluster>/discovery.k8s.io/EndpointSlice/<ns>/<slice>/<first ip>",
// HOST_NETWORK since the address may be shared, no identity). Slices of
// Services with a selector are ignored: the selector decides membership.
func (b *builder) indexEndpointSlices() {
	if len(b.endpointSlices) == 0 || len(b.manualServices) == 0 {
		return
	}
	var manual []*discoveryv1.EndpointSlice
	for _, s := range b.endpointSlices {
		if b.manualServices[s.Namespace+"/"+s.Labels[LabelServiceName]] != nil && s.AddressType != discoveryv1.AddressTypeFQDN {
			manual = append(manual, s)
		}
	}
	if len(manual) == 0 {
		return
	}
	podByName, podByIP := b.podsNamedBy(manual)
	for _, s := range manual {
		info := b.manualServices[s.Namespace+"/"+s.Labels[LabelServiceName]]
		ports := make(map[string]uint32, len(s.Ports))
		for _, p := range s.Ports {
			if p.Port == nil || (p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP) {
				continue
			}
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			ports[name] = uint32(*p.Port)
		}
		m := sliceMembership{svc: info, ports: ports}
		seen := map[string]bool{}
		for _, ep := range s.Endpoints {
			var pod *corev1.Pod
			isPod := ep.TargetRef != nil && ep.TargetRef.Kind == "Pod"
			if isPod {
				pod = podByName[objectName{targetNamespace(ep.TargetRef, s), ep.TargetRef.Name}]
			} else {
				for _, a := range ep.Addresses {
					if ip, err := netip.ParseAddr(a); err == nil && podByIP[ip] != nil {
						pod = podByIP[ip]
						break
					}
				}
			}
			switch {
			case pod != nil:
				k := objectName{pod.Namespace, pod.Name}
				b.sliceMembers[k] = append(b.sliceMembers[k], m)
			case !isPod && len(ep.Addresses) > 0 && !seen[ep.Addresses[0]]:
				seen[ep.Addresses[0]] = true
				b.endpointWorkload(s, ep, m)
			}
		}
	}
}

func targetNamespace(ref *corev1.ObjectReference, s *discoveryv1.EndpointSlice) string {
	if ref.Namespace == "" {
		return s.Namespace
	}
	return ref.Namespace
}

// podsNamedBy finds the pods the endpoints of slices name, by name (Pod
// targetRef) and by IP. When several pods have an IP, the first by
// namespace and name is chosen. Host-network pods (a node IP says nothing
// about which pod it is) and finished pods (their IP may be reused) are not
// found by IP.
func (b *builder) podsNamedBy(slices []*discoveryv1.EndpointSlice) (map[objectName]*corev1.Pod, map[netip.Addr]*corev1.Pod) {
	names := map[objectName]bool{}
	ips := map[netip.Addr]bool{}
	for _, s := range slices {
		for _, ep := range s.Endpoints {
			if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" {
				names[objectName{targetNamespace(ep.TargetRef, s), ep.TargetRef.Name}] = true
				continue
			}
			for _, a := range ep.Addresses {
				if ip, err := netip.ParseAddr(a); err == nil {
					ips[ip] = true
				}
			}
		}
	}
	byName := map[objectName]*corev1.Pod{}
	byIP := map[netip.Addr]*corev1.Pod{}
	for _, p := range b.pods {
		if n := (objectName{p.Namespace, p.Name}); names[n] {
			byName[n] = p
		}
		if len(ips) == 0 || p.Spec.HostNetwork || PodTerminal(p) {
			continue
		}
		found := func(ip string) {
			a, err := netip.ParseAddr(ip)
			if err != nil || !ips[a] {
				return
			}
			if q := byIP[a]; q == nil || p.Namespace < q.Namespace || (p.Namespace == q.Namespace && p.Name < q.Name) {
				byIP[a] = p
			}
		}
		// As podIPStrings, without allocating for each of many pods.
		if len(p.Status.PodIPs) > 0 {
			for _, ip := range p.Status.PodIPs {
				found(ip.IP)
			}
		} else if p.Status.PodIP != "" {
			found(p.Status.PodIP)
		}
	}
	return byName, byIP
}

// endpointWorkload publishes an EndpointSlice endpoint that is not a pod,
// reusing the workload b.memo made of the same slice.
func (b *builder) endpointWorkload(s *discoveryv1.EndpointSlice, ep discoveryv1.Endpoint, m sliceMembership) {
	uid := b.cfg.ClusterID + "/discovery.k8s.io/EndpointSlice/" + s.Namespace + "/" + s.Name + "/" + ep.Addresses[0]
	w := b.memo.endpoint(uid, s)
	if w == nil {
		w = b.newEndpointWorkload(uid, s, ep, m)
	}
	b.out.Workloads[uid] = w
	b.memo.recordEndpoint(uid, s, w)
}

func (b *builder) newEndpointWorkload(uid string, s *discoveryv1.EndpointSlice, ep discoveryv1.Endpoint, m sliceMembership) *workloadapi.Workload {
	w := &workloadapi.Workload{
		Uid:         uid,
		Name:        s.Name,
		Namespace:   s.Namespace,
		Network:     b.cfg.Network,
		TrustDomain: b.cfg.TrustDomain,
		ClusterId:   b.cfg.ClusterID,
		NetworkMode: workloadapi.NetworkMode_HOST_NETWORK,
		Services:    map[string]*workloadapi.PortList{m.svc.key: slicePorts(m)},
	}
	for _, a := range ep.Addresses {
		if ip, err := netip.ParseAddr(a); err == nil {
			w.Addresses = append(w.Addresses, ip.AsSlice())
		}
	}
	if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
		w.Status = workloadapi.WorkloadStatus_UNHEALTHY
	}
	return w
}

// slicePorts resolves a selector-less Service's ports through the
// EndpointSlice port of the same name; ports the slice lacks are left out.
func slicePorts(m sliceMembership) *workloadapi.PortList {
	pl := &workloadapi.PortList{Ports: make([]*workloadapi.Port, 0, len(m.svc.ports))}
	for _, sp := range m.svc.ports {
		t, ok := m.ports[sp.name]
		if !ok {
			continue
		}
		pl.Ports = append(pl.Ports, &workloadapi.Port{ServicePort: sp.port, TargetPort: t})
	}
	return pl
}
