package index

import (
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/zmesh/zmesh/pkg/workloadapi"
)

// serviceInfo is what a workload needs to know about a service it may
// belong to.
type serviceInfo struct {
	// key is "<ns>/<hostname>", the Workload.services map key.
	key string
	// selector selects member pods/WorkloadEntries of the same namespace;
	// nil for selector-less Services.
	selector map[string]string
	// fromServiceEntry: targets resolve through port names, not targetPort names.
	fromServiceEntry bool
	ports            []servicePort
}

// servicePort is one port of a service with its unresolved target.
type servicePort struct {
	port uint32
	// name of the service port (matched against EndpointSlice ports and
	// WorkloadEntry port maps).
	name string
	// targetNum is the numeric target; 0 when targetName is set.
	targetNum uint32
	// targetName is a Service's named targetPort.
	targetName string
}

// hostnameOf returns the cluster-local hostname of a Service.
func (b *builder) hostnameOf(ns, name string) string {
	return name + "." + ns + ".svc." + b.cfg.DomainSuffix
}

// buildServices converts Kubernetes Services. ExternalName Services have
// no address for ztunnel to capture and are skipped.
func (b *builder) buildServices() {
	for _, svc := range b.services {
		if svc.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		host := b.hostnameOf(svc.Namespace, svc.Name)
		info := &serviceInfo{key: svc.Namespace + "/" + host}
		out := &workloadapi.Service{
			Name:      svc.Name,
			Namespace: svc.Namespace,
			Hostname:  host,
			Addresses: b.serviceAddresses(svc),
		}
		for _, p := range svc.Spec.Ports {
			sp := servicePort{port: uint32(p.Port), name: p.Name}
			target := uint32(0)
			switch {
			case p.TargetPort.Type == intstr.String:
				sp.targetName = p.TargetPort.StrVal
			case p.TargetPort.IntVal == 0:
				// The API server defaults an unset targetPort to the port.
				sp.targetNum, target = uint32(p.Port), uint32(p.Port)
			default:
				sp.targetNum, target = uint32(p.TargetPort.IntVal), uint32(p.TargetPort.IntVal)
			}
			info.ports = append(info.ports, sp)
			out.Ports = append(out.Ports, &workloadapi.Port{
				ServicePort: uint32(p.Port),
				TargetPort:  target,
				AppProtocol: appProtocolOf(p.Protocol, p.Name, p.AppProtocol),
			})
		}
		out.IpFamilies = ipFamiliesOf(svc, out.Addresses)
		out.IngressUseWaypoint = b.ingressUseWaypoint(svc.Namespace, svc.Labels)
		if !b.isWaypointInstance(svc.Namespace, svc.Labels) {
			bound := b.resolveWaypoint(bindService, kindService, svc.Namespace, svc.Name, svc.Labels, "")
			out.Waypoint = bound.addr
			b.recordServiceBinding(svc, bound, out.IngressUseWaypoint)
		}
		b.out.Services[info.key] = out
		if len(svc.Spec.Selector) > 0 {
			info.selector = svc.Spec.Selector
			b.selectingServices[svc.Namespace] = append(b.selectingServices[svc.Namespace], info)
		} else {
			b.manualServices[svc.Namespace+"/"+svc.Name] = info
		}
	}
}

// serviceAddresses returns the cluster IPs (none for headless Services)
// followed by the IPs of LoadBalancer ingress points.
func (b *builder) serviceAddresses(svc *corev1.Service) []*workloadapi.NetworkAddress {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	var res []*workloadapi.NetworkAddress
	seen := map[netip.Addr]bool{}
	add := func(v string) {
		a, err := netip.ParseAddr(v)
		if err != nil || seen[a] {
			return
		}
		seen[a] = true
		res = append(res, &workloadapi.NetworkAddress{Network: b.cfg.Network, Address: a.AsSlice()})
	}
	for _, ip := range ips {
		if ip != corev1.ClusterIPNone {
			add(ip)
		}
	}
	if svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		for _, ing := range svc.Status.LoadBalancer.Ingress {
			if ing.IP != "" {
				add(ing.IP)
			}
		}
	}
	return res
}

// ipFamiliesOf reads spec.ipFamilies, or infers them from the addresses
// when the field was not defaulted (objects not from an API server).
func ipFamiliesOf(svc *corev1.Service, addrs []*workloadapi.NetworkAddress) workloadapi.IPFamilies {
	var v4, v6 bool
	if len(svc.Spec.IPFamilies) > 0 {
		for _, f := range svc.Spec.IPFamilies {
			v4 = v4 || f == corev1.IPv4Protocol
			v6 = v6 || f == corev1.IPv6Protocol
		}
	} else {
		for _, a := range addrs {
			v4 = v4 || len(a.Address) == 4
			v6 = v6 || len(a.Address) == 16
		}
	}
	switch {
	case v4 && v6:
		return workloadapi.IPFamilies_DUAL
	case v4:
		return workloadapi.IPFamilies_IPV4_ONLY
	case v6:
		return workloadapi.IPFamilies_IPV6_ONLY
	}
	return workloadapi.IPFamilies_AUTOMATIC
}

// ingressUseWaypoint reads istio.io/ingress-use-waypoint from the object,
// else from its namespace.
func (b *builder) ingressUseWaypoint(ns string, labels map[string]string) bool {
	if v, ok := labels[LabelIngressUseWaypoint]; ok {
		return strings.EqualFold(v, "true")
	}
	return strings.EqualFold(b.nsLabels(ns)[LabelIngressUseWaypoint], "true")
}

// podPorts resolves a service's ports for one pod: a named targetPort is
// the pod's container port of that name; ports whose name the pod lacks
// are left out, as Kubernetes does for endpoints.
func podPorts(info *serviceInfo, pod *corev1.Pod) *workloadapi.PortList {
	pl := &workloadapi.PortList{Ports: make([]*workloadapi.Port, 0, len(info.ports))}
	for _, sp := range info.ports {
		target := sp.targetNum
		if sp.targetName != "" {
			t, ok := containerPort(pod, sp.targetName)
			if !ok {
				continue
			}
			target = t
		}
		pl.Ports = append(pl.Ports, &workloadapi.Port{ServicePort: sp.port, TargetPort: target})
	}
	return pl
}

func containerPort(pod *corev1.Pod, name string) (uint32, bool) {
	for i := range pod.Spec.Containers {
		for _, cp := range pod.Spec.Containers[i].Ports {
			if cp.Name == name {
				return uint32(cp.ContainerPort), true
			}
		}
	}
	return 0, false
}

// entryPorts resolves a service's ports for a WorkloadEntry or a
// ServiceEntry endpoint with the given named ports. For a Service, a named
// targetPort must be in ports (else the port is left out). For a
// ServiceEntry, a port whose name is in ports uses it; otherwise the
// ServiceEntry's targetPort, else the port itself.
func entryPorts(info *serviceInfo, ports map[string]uint32) *workloadapi.PortList {
	pl := &workloadapi.PortList{Ports: make([]*workloadapi.Port, 0, len(info.ports))}
	for _, sp := range info.ports {
		target := sp.targetNum
		switch {
		case info.fromServiceEntry:
			if t, ok := ports[sp.name]; ok && sp.name != "" {
				target = t
			}
		case sp.targetName != "":
			t, ok := ports[sp.targetName]
			if !ok {
				continue
			}
			target = t
		}
		pl.Ports = append(pl.Ports, &workloadapi.Port{ServicePort: sp.port, TargetPort: target})
	}
	return pl
}
