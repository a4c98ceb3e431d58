package l7

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	corev1 "k8s.io/api/core/v1"
)

// ClusterName is Istio's cluster name for a service port and subset (empty
// for the whole service): "outbound|<port>|<subset>|<hostname>".
func ClusterName(port uint32, subset, host string) string {
	return fmt.Sprintf("outbound|%d|%s|%s", port, subset, host)
}

// clusterRef is one cluster some route or service needs.
type clusterRef struct {
	svc    *service
	port   uint32
	subset string
}

// ref names the cluster of a service port and subset and records that it
// must be built. A service or port that does not exist, or a subset its
// DestinationRule does not define, gives the name without a Cluster: the
// waypoint answers 500 for it, as Istio does for a missing backend.
func (b *builder) ref(s *service, port uint32, subset string) string {
	if s.port(port) == nil {
		return ClusterName(port, subset, s.host)
	}
	if subset != "" {
		if d := b.dr[s.key]; d == nil || d.subsets[subset] == nil {
			return ClusterName(port, subset, s.host)
		}
	}
	name := ClusterName(port, subset, s.host)
	b.clusterRefs[name] = clusterRef{svc: s, port: port, subset: subset}
	return name
}

// buildClusters builds the default cluster of every port of every service
// bound to a waypoint, plus every cluster a route referenced.
func (b *builder) buildClusters() {
	for _, s := range b.svcList {
		if s.waypoint == nil {
			continue
		}
		for _, p := range s.ports {
			b.ref(s, p.port, "")
		}
	}
	podsByNS := b.podsByNamespace()
	for name, r := range b.clusterRefs {
		c := &clusterv3.Cluster{Name: name}
		shapeCluster(c, b.policyFor(r.svc, r.port, r.subset))
		c.LoadAssignment = b.loadAssignment(name, r, podsByNS[r.svc.ns])
		b.out.Clusters = append(b.out.Clusters, c)
	}
}

// podsByNamespace returns the accepted pods of the namespaces that have a
// referenced service with a selector, by namespace.
func (b *builder) podsByNamespace() map[string][]*corev1.Pod {
	wanted := map[string]bool{}
	for _, r := range b.clusterRefs {
		if r.svc.selector != nil {
			wanted[r.svc.ns] = true
		}
	}
	res := map[string][]*corev1.Pod{}
	if len(wanted) == 0 {
		return res
	}
	for ns := range wanted {
		b.out.PodNamespaces = append(b.out.PodNamespaces, ns)
	}
	slices.Sort(b.out.PodNamespaces)
	var pods []*corev1.Pod
	for _, p := range b.allPods {
		if p != nil && wanted[p.Namespace] {
			pods = append(pods, p)
		}
	}
	for _, p := range accept(b, kindPod, pods, indexValid) {
		res[p.Namespace] = append(res[p.Namespace], p)
	}
	return res
}

// loadAssignment lists a cluster's endpoints, or returns nil when they are
// left to the workload API (services without a selector, DNS
// ServiceEntries): the whole service's healthy endpoints. A subset of such
// a service gets no endpoints at all rather than every endpoint.
func (b *builder) loadAssignment(name string, r clusterRef, pods []*corev1.Pod) *endpointv3.ClusterLoadAssignment {
	var subsetLabels map[string]string
	if r.subset != "" {
		subsetLabels = b.dr[r.svc.key].subsets[r.subset].Labels
	}
	sp := r.svc.port(r.port)
	var eps []*endpointv3.LbEndpoint
	switch {
	case r.svc.selector != nil:
		for _, p := range pods {
			if !selects(r.svc.selector, p.Labels) || !selects(subsetLabels, p.Labels) {
				continue
			}
			if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
				continue
			}
			ip, err := netip.ParseAddr(p.Status.PodIP)
			if err != nil {
				continue
			}
			target := sp.targetNum
			if sp.targetName != "" {
				t, ok := containerPort(p, sp.targetName)
				if !ok {
					continue
				}
				target = t
			}
			if r.svc.kind == kindServiceEntry && sp.name != "" {
				if t, ok := containerPort(p, sp.name); ok {
					target = t
				}
			}
			eps = append(eps, lbEndpoint(ip, target, podReady(p)))
		}
	case r.svc.se != nil && len(r.svc.se.Spec.Endpoints) > 0:
		for _, ep := range r.svc.se.Spec.Endpoints {
			if ep == nil {
				continue
			}
			ip, err := netip.ParseAddr(ep.Address)
			if err != nil {
				// A hostname endpoint: only the workload API resolves it.
				if r.subset != "" {
					continue
				}
				return nil
			}
			if !selects(subsetLabels, ep.Labels) {
				continue
			}
			target := sp.targetNum
			if t, ok := ep.Ports[sp.name]; ok && sp.name != "" && t > 0 && t <= 65535 {
				target = t
			}
			eps = append(eps, lbEndpoint(ip, target, true))
		}
	default:
		if r.subset == "" {
			return nil
		}
	}
	slices.SortFunc(eps, func(x, y *endpointv3.LbEndpoint) int {
		ax, ay := x.GetEndpoint().GetAddress().GetSocketAddress(), y.GetEndpoint().GetAddress().GetSocketAddress()
		px, _ := netip.ParseAddr(ax.GetAddress())
		py, _ := netip.ParseAddr(ay.GetAddress())
		return cmp.Or(px.Compare(py), cmp.Compare(ax.GetPortValue(), ay.GetPortValue()))
	})
	eps = slices.CompactFunc(eps, func(x, y *endpointv3.LbEndpoint) bool {
		ax, ay := x.GetEndpoint().GetAddress().GetSocketAddress(), y.GetEndpoint().GetAddress().GetSocketAddress()
		return ax.GetAddress() == ay.GetAddress() && ax.GetPortValue() == ay.GetPortValue()
	})
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	if len(eps) > 0 {
		cla.Endpoints = []*endpointv3.LocalityLbEndpoints{{LbEndpoints: eps}}
	}
	return cla
}

func lbEndpoint(ip netip.Addr, port uint32, healthy bool) *endpointv3.LbEndpoint {
	hs := corev3.HealthStatus_HEALTHY
	if !healthy {
		hs = corev3.HealthStatus_UNHEALTHY
	}
	return &endpointv3.LbEndpoint{
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address:       ip.Unmap().String(),
				PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
			}}},
		}},
		HealthStatus: hs,
	}
}

// podReady is true when the pod is Ready and not being deleted.
func podReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func containerPort(p *corev1.Pod, name string) (uint32, bool) {
	for i := range p.Spec.Containers {
		for _, cp := range p.Spec.Containers[i].Ports {
			if cp.Name == name && cp.ContainerPort > 0 && cp.ContainerPort <= 65535 {
				return uint32(cp.ContainerPort), true
			}
		}
	}
	return 0, false
}

// selects reports whether every key/value of selector is in labels.
func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}
