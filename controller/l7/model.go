package l7

import (
	"net/netip"
	"slices"
	"strings"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/zmesh/zmesh/controller/index"
)

// waypoint is one Gateway of class istio-waypoint.
type waypoint struct {
	ns, name string
	// servesServices is false for waypoint-for "workload" or "none" (and
	// for a per-service-account waypoint without the label).
	servesServices bool
	// ready is true once the Gateway has a status address: only then does
	// the index bind anything to it.
	ready bool
}

// service is one Service or ServiceEntry host the waypoint configuration
// may name, bound to a waypoint or not.
type service struct {
	key  string // "<ns>/<hostname>"
	ns   string
	name string // object name
	host string
	kind string // kindService or kindServiceEntry
	// selector picks member pods of ns; nil means the endpoints are left to
	// the workload API (selector-less Services, ServiceEntries with inline
	// endpoints are listed in entryEndpoints instead).
	selector map[string]string
	ports    []*svcPort
	se       *networkingv1.ServiceEntry
	waypoint *waypoint

	// L7 attachments, filled by the attach* steps.
	att attachments
}

// svcPort is one port of a service.
type svcPort struct {
	port uint32
	name string
	// targetNum is the numeric target port (0 when targetName is set).
	targetNum uint32
	// targetName is a Service's named targetPort, resolved per pod.
	targetName string
	http       bool
}

func (s *service) port(n uint32) *svcPort {
	for _, p := range s.ports {
		if p.port == n {
			return p
		}
	}
	return nil
}

func (s *service) portByName(name string) *svcPort {
	for _, p := range s.ports {
		if p.name == name {
			return p
		}
	}
	return nil
}

// indexWaypoints collects waypoint Gateways as the index does.
func (b *builder) indexWaypoints() {
	for _, gw := range b.gateways {
		if string(gw.Spec.GatewayClassName) != index.WaypointGatewayClass {
			continue
		}
		w := &waypoint{ns: gw.Namespace, name: gw.Name, servesServices: true, ready: waypointReady(gw)}
		v, labelled := gw.Labels[index.LabelWaypointFor]
		switch {
		case labelled:
			w.servesServices = v == "service" || v == "all"
		case gw.Annotations[index.AnnotationForServiceAccount] != "":
			w.servesServices = false
		}
		b.waypoints[gw.Namespace+"/"+gw.Name] = w
	}
}

// serviceWaypoint binds a Service or ServiceEntry to its waypoint with the
// index's rules: the object's istio.io/use-waypoint label ("none" opts
// out), else its namespace's. The waypoint must exist, serve services and
// be ready; the index reports the problems when it does not.
func (b *builder) serviceWaypoint(ns string, labels map[string]string) *waypoint {
	if labels[index.LabelGatewayManaged] == index.GatewayManagedMesh {
		return nil
	}
	if n := labels[index.LabelGatewayName]; n != "" && b.waypoints[ns+"/"+n] != nil {
		return nil // the waypoint's own Service
	}
	pick := func(l map[string]string) (*waypoint, bool) {
		v := l[index.LabelUseWaypoint]
		if v == "" {
			return nil, false
		}
		if v == index.DataplaneModeNone {
			return nil, true
		}
		wns := l[index.LabelUseWaypointNamespace]
		if wns == "" {
			wns = ns
		}
		w := b.waypoints[wns+"/"+v]
		if w == nil || !w.servesServices || !w.ready {
			return nil, true
		}
		return w, true
	}
	if w, decided := pick(labels); decided {
		return w
	}
	w, _ := pick(b.nsLabels[ns])
	return w
}

// waypointReady mirrors the index: the Gateway has a usable first status
// address, and the deployer has not refused its current generation.
func waypointReady(gw *gatewayv1.Gateway) bool {
	for _, c := range gw.Status.Conditions {
		if c.Type == string(gatewayv1.GatewayConditionAccepted) && c.Status == metav1.ConditionFalse &&
			c.ObservedGeneration == gw.Generation {
			return false
		}
	}
	if len(gw.Status.Addresses) == 0 {
		return false
	}
	a := gw.Status.Addresses[0]
	switch {
	case a.Type == nil || *a.Type == gatewayv1.IPAddressType:
		_, err := netip.ParseAddr(a.Value)
		return err == nil
	case *a.Type == gatewayv1.HostnameAddressType:
		return true
	}
	return false
}

func (b *builder) hostnameOf(ns, name string) string {
	return name + "." + ns + ".svc." + b.cfg.DomainSuffix
}

// indexServices collects Services and ServiceEntry hosts. A ServiceEntry
// host already published in its namespace keeps its first owner, as in
// the index.
func (b *builder) indexServices() {
	for _, svc := range b.services {
		if svc.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		s := &service{
			ns: svc.Namespace, name: svc.Name, host: b.hostnameOf(svc.Namespace, svc.Name), kind: kindService,
			waypoint: b.serviceWaypoint(svc.Namespace, svc.Labels),
		}
		if len(svc.Spec.Selector) > 0 {
			s.selector = svc.Spec.Selector
		}
		for _, p := range svc.Spec.Ports {
			if p.Port <= 0 || p.Port > 65535 || (p.Protocol != "" && p.Protocol != corev1.ProtocolTCP) {
				continue
			}
			sp := &svcPort{port: uint32(p.Port), name: p.Name, http: isHTTP(p.Name, p.AppProtocol)}
			switch {
			case p.TargetPort.Type == intstr.String:
				sp.targetName = p.TargetPort.StrVal
			case p.TargetPort.IntVal <= 0 || p.TargetPort.IntVal > 65535:
				sp.targetNum = uint32(p.Port)
			default:
				sp.targetNum = uint32(p.TargetPort.IntVal)
			}
			s.ports = append(s.ports, sp)
		}
		b.addService(s)
	}
	for _, se := range b.entries {
		w := b.serviceWaypoint(se.Namespace, se.Labels)
		var ports []*svcPort
		for _, p := range se.Spec.Ports {
			if p == nil || p.Number == 0 || p.Number > 65535 {
				continue
			}
			t := p.TargetPort
			if t == 0 || t > 65535 {
				t = p.Number
			}
			ports = append(ports, &svcPort{port: p.Number, name: p.Name, targetNum: t, http: isHTTPProtocol(p.Protocol)})
		}
		for _, h := range se.Spec.Hosts {
			if h == "" || strings.Contains(h, "*") {
				continue
			}
			s := &service{ns: se.Namespace, name: se.Name, host: h, kind: kindServiceEntry, ports: ports, se: se, waypoint: w}
			if sel := se.Spec.GetWorkloadSelector().GetLabels(); len(sel) > 0 {
				s.selector = sel
			}
			if _, dup := b.svcs[se.Namespace+"/"+h]; dup {
				continue // the index reports it
			}
			b.addService(s)
		}
	}
	for _, hs := range b.byHost {
		slices.SortFunc(hs, func(x, y *service) int { return strings.Compare(x.ns, y.ns) })
	}
	b.svcList = make([]*service, 0, len(b.svcs))
	for _, s := range b.svcs {
		b.svcList = append(b.svcList, s)
	}
	slices.SortFunc(b.svcList, func(x, y *service) int { return strings.Compare(x.key, y.key) })
}

func (b *builder) addService(s *service) {
	s.key = s.ns + "/" + s.host
	b.svcs[s.key] = s
	b.byHost[s.host] = append(b.byHost[s.host], s)
}

// lookupHost resolves a hostname written in namespace ns: a name without
// dots is a Service of ns; anything else is looked up as written,
// preferring a host published in ns. The result is nil when no service has
// that host. Wildcard hosts never resolve here.
func (b *builder) lookupHost(h, ns string) *service {
	h = b.expandHost(h, ns)
	hs := b.byHost[h]
	if len(hs) == 0 {
		return nil
	}
	for _, s := range hs {
		if s.ns == ns {
			return s
		}
	}
	return hs[0]
}

func (b *builder) expandHost(h, ns string) string {
	if !strings.Contains(h, ".") && h != "*" && h != "" {
		return b.hostnameOf(ns, h)
	}
	return h
}

// isHTTP reports whether a Service port speaks HTTP (HTTP/1.1, HTTP/2,
// gRPC): its appProtocol, else its name's prefix, as Istio's protocol
// selection.
func isHTTP(name string, appProtocol *string) bool {
	if appProtocol != nil && *appProtocol != "" {
		return isHTTPProtocol(*appProtocol)
	}
	if strings.HasPrefix(strings.ToLower(name), "grpc-web") {
		return true
	}
	prefix, _, _ := strings.Cut(name, "-")
	return isHTTPProtocol(prefix)
}

func isHTTPProtocol(p string) bool {
	switch strings.ToLower(p) {
	case "http", "http1", "http11", "http2", "h2c", "grpc", "grpc-web",
		"kubernetes.io/h2c", "kubernetes.io/ws":
		return true
	}
	return false
}
