package index

import (
	"fmt"
	"net/netip"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/zmesh/zmesh/pkg/workloadapi"
)

// waypointFor says which traffic a waypoint may serve.
type waypointFor uint8

const (
	waypointForService waypointFor = 1 << iota
	waypointForWorkload
	waypointForNone waypointFor = 0
	waypointForAll              = waypointForService | waypointForWorkload
)

// parseWaypointFor reads the istio.io/waypoint-for label value.
func parseWaypointFor(v string) (waypointFor, bool) {
	switch v {
	case "service":
		return waypointForService, true
	case "workload":
		return waypointForWorkload, true
	case "all":
		return waypointForAll, true
	case "none":
		return waypointForNone, true
	}
	return waypointForNone, false
}

// waypoint is one Gateway of class istio-waypoint.
type waypoint struct {
	gw     *gatewayv1.Gateway
	serves waypointFor
	// addr is nil until the Gateway has a usable status address.
	addr *workloadapi.GatewayAddress
	// notReady explains why addr is nil.
	notReady string
}

func (w *waypoint) key() string { return w.gw.Namespace + "/" + w.gw.Name }

// indexWaypoints collects waypoint Gateways and their addresses.
func (b *builder) indexWaypoints() {
	for _, gw := range b.gateways {
		if string(gw.Spec.GatewayClassName) != WaypointGatewayClass {
			continue
		}
		w := &waypoint{gw: gw, serves: waypointForService}
		if v, ok := gw.Labels[LabelWaypointFor]; ok {
			w.serves, _ = parseWaypointFor(v) // validated
		}
		sa := gw.Annotations[AnnotationForServiceAccount]
		if _, ok := gw.Labels[LabelWaypointFor]; !ok && sa != "" {
			// A per-service-account waypoint serves that account's workloads.
			w.serves = waypointForWorkload
		}
		w.addr, w.notReady = b.waypointAddress(gw)
		b.waypoints[w.key()] = w
		if sa != "" {
			k := gw.Namespace + "/" + sa
			if prev := b.saWaypoints[k]; prev != nil {
				b.problem(kindGateway, gw.Namespace, gw.Name, fmt.Sprintf(
					"service account %q already has waypoint %s; this one is not bound", sa, prev.gw.Name))
				continue
			}
			b.saWaypoints[k] = w
		}
	}
}

// waypointAddress turns the first status address of gw into a
// GatewayAddress, or says why it cannot.
func (b *builder) waypointAddress(gw *gatewayv1.Gateway) (*workloadapi.GatewayAddress, string) {
	port := uint32(DefaultHBONEPort)
	for _, l := range gw.Spec.Listeners {
		if l.Protocol == ListenerProtocolHBONE {
			port = uint32(l.Port)
			break
		}
	}
	if len(gw.Status.Addresses) == 0 {
		return nil, "has no status address yet"
	}
	a := gw.Status.Addresses[0]
	switch {
	case a.Type == nil || *a.Type == gatewayv1.IPAddressType:
		ip, err := netip.ParseAddr(a.Value)
		if err != nil {
			return nil, fmt.Sprintf("status address %q is not an IP", a.Value) // validated; defensive
		}
		network := b.cfg.Network
		if n := gw.Labels[LabelNetwork]; n != "" {
			network = n
		}
		return &workloadapi.GatewayAddress{
			Destination: &workloadapi.GatewayAddress_Address{Address: &workloadapi.NetworkAddress{
				Network: network, Address: ip.AsSlice(),
			}},
			HboneMtlsPort: port,
		}, ""
	case *a.Type == gatewayv1.HostnameAddressType:
		return &workloadapi.GatewayAddress{
			Destination: &workloadapi.GatewayAddress_Hostname{Hostname: &workloadapi.NamespacedHostname{
				Namespace: gw.Namespace, Hostname: a.Value,
			}},
			HboneMtlsPort: port,
		}, ""
	default:
		return nil, fmt.Sprintf("status address type %q is not supported", *a.Type)
	}
}

// isWaypointInstance reports whether an object (pod or Service) belongs to
// a waypoint deployment; such objects never get a waypoint themselves.
func (b *builder) isWaypointInstance(ns string, labels map[string]string) bool {
	if labels[LabelGatewayManaged] == GatewayManagedMesh {
		return true
	}
	if name := labels[LabelGatewayName]; name != "" {
		return b.waypoints[ns+"/"+name] != nil
	}
	return false
}

// bindingKind says whether a service or a workload is being bound.
type bindingKind uint8

const (
	bindService bindingKind = iota
	bindWorkload
)

func (k bindingKind) String() string {
	if k == bindService {
		return "service"
	}
	return "workload"
}

func (w *waypoint) allows(k bindingKind) bool {
	if k == bindService {
		return w.serves&waypointForService != 0
	}
	return w.serves&waypointForWorkload != 0
}

// resolveWaypoint binds an object to its waypoint, following Istio's
// precedence: the object's own istio.io/use-waypoint label, then (for
// workloads) a per-service-account waypoint, then its namespace's label.
// "none" on the object or its namespace opts out. Problems are reported
// against the object whose label names a missing, unready or unsuitable
// waypoint. The result is nil when no usable waypoint applies.
func (b *builder) resolveWaypoint(kind bindingKind, objKind, ns, name string, labels map[string]string, sa string) *workloadapi.GatewayAddress {
	if v, ok := labels[LabelUseWaypoint]; ok && v != "" {
		if v == DataplaneModeNone {
			return nil
		}
		wns := labels[LabelUseWaypointNamespace]
		if wns == "" {
			wns = ns
		}
		return b.usableWaypoint(kind, objKind, ns, name, wns, v, true)
	}
	if kind == bindWorkload && sa != "" {
		if w := b.saWaypoints[ns+"/"+sa]; w != nil {
			if w.addr == nil {
				b.problem(kindGateway, w.gw.Namespace, w.gw.Name, "waypoint "+w.notReady+"; pods of service account "+sa+" are not bound to it")
				return nil
			}
			if !w.allows(kind) {
				b.problem(kindGateway, w.gw.Namespace, w.gw.Name, "per-service-account waypoint does not accept workload traffic ("+LabelWaypointFor+")")
				return nil
			}
			return w.addr
		}
	}
	nsl := b.nsLabels(ns)
	if v, ok := nsl[LabelUseWaypoint]; ok && v != "" {
		if v == DataplaneModeNone {
			return nil
		}
		wns := nsl[LabelUseWaypointNamespace]
		if wns == "" {
			wns = ns
		}
		return b.usableWaypoint(kind, kindNamespace, "", ns, wns, v, false)
	}
	return nil
}

// usableWaypoint looks a named waypoint up for a binding. explicit is true
// when the bound object itself names the waypoint, so that a waypoint which
// does not serve this kind of traffic is a problem rather than a no-op.
func (b *builder) usableWaypoint(kind bindingKind, objKind, objNS, objName, wns, wname string, explicit bool) *workloadapi.GatewayAddress {
	w := b.waypoints[wns+"/"+wname]
	if w == nil {
		b.problem(objKind, objNS, objName, fmt.Sprintf("waypoint %s/%s does not exist", wns, wname))
		return nil
	}
	if !w.allows(kind) {
		if explicit {
			b.problem(objKind, objNS, objName, fmt.Sprintf("waypoint %s/%s does not accept %s traffic (%s)", wns, wname, kind, LabelWaypointFor))
		}
		return nil
	}
	if w.addr == nil {
		b.problem(objKind, objNS, objName, fmt.Sprintf("waypoint %s/%s is not ready: it %s", wns, wname, w.notReady))
		return nil
	}
	return w.addr
}
