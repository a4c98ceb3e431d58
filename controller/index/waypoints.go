package index

import (
	"fmt"
	"net/netip"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	for _, c := range gw.Status.Conditions {
		// The deployer refused this Gateway (for its current spec): any
		// address left in its status is stale or not ours.
		if c.Type == string(gatewayv1.GatewayConditionAccepted) && c.Status == metav1.ConditionFalse &&
			c.ObservedGeneration == gw.Generation {
			return nil, fmt.Sprintf("was not accepted (%s): %s", c.Reason, c.Message)
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

// bindResult is the outcome of resolveWaypoint.
type bindResult struct {
	// addr is the waypoint to put in the resource; nil when none applies.
	addr *workloadapi.GatewayAddress
	// waypoint is "<ns>/<name>" of the waypoint the object asked for;
	// empty when it asked for none (or opted out).
	waypoint string
	// reason and message say why addr is nil although waypoint is set.
	reason, message string
}

// condition renders r as an istio.io/WaypointBound condition.
func (r bindResult) condition() Condition {
	if r.addr != nil {
		return Condition{Status: true, Reason: ReasonWaypointAccepted, Message: "Successfully attached to waypoint " + r.waypoint}
	}
	return Condition{Reason: r.reason, Message: r.message}
}

// resolveWaypoint binds an object to its waypoint, following Istio's
// precedence: the object's own istio.io/use-waypoint label, then (for
// workloads) a per-service-account waypoint, then its namespace's label.
// "none" on the object or its namespace opts out. Problems are reported
// against the object whose label names a missing, unready or unsuitable
// waypoint. The result's addr is nil when no usable waypoint applies.
func (b *builder) resolveWaypoint(kind bindingKind, objKind, ns, name string, labels map[string]string, sa string) bindResult {
	if v, ok := labels[LabelUseWaypoint]; ok && v != "" {
		if v == DataplaneModeNone {
			return bindResult{}
		}
		wns := labels[LabelUseWaypointNamespace]
		if wns == "" {
			wns = ns
		}
		return b.usableWaypoint(kind, objKind, ns, name, wns, v, true)
	}
	if kind == bindWorkload && sa != "" {
		if w := b.saWaypoints[ns+"/"+sa]; w != nil {
			res := bindResult{waypoint: w.key()}
			if w.addr == nil {
				b.problem(kindGateway, w.gw.Namespace, w.gw.Name, "waypoint "+w.notReady+"; pods of service account "+sa+" are not bound to it")
				res.reason, res.message = ReasonWaypointIsNotReady, fmt.Sprintf("waypoint %q is not ready: it %s", w.key(), w.notReady)
				return res
			}
			if !w.allows(kind) {
				b.problem(kindGateway, w.gw.Namespace, w.gw.Name, "per-service-account waypoint does not accept workload traffic ("+LabelWaypointFor+")")
				res.reason, res.message = ReasonUnsupportedTrafficType, unsupportedTrafficMessage(kind, w.key())
				return res
			}
			res.addr = w.addr
			return res
		}
	}
	nsl := b.nsLabels(ns)
	if v, ok := nsl[LabelUseWaypoint]; ok && v != "" {
		if v == DataplaneModeNone {
			return bindResult{}
		}
		wns := nsl[LabelUseWaypointNamespace]
		if wns == "" {
			wns = ns
		}
		return b.usableWaypoint(kind, kindNamespace, "", ns, wns, v, false)
	}
	return bindResult{}
}

func unsupportedTrafficMessage(kind bindingKind, waypoint string) string {
	return fmt.Sprintf("attempting to bind to traffic type %q which the waypoint %q does not support", kind, waypoint)
}

// usableWaypoint looks a named waypoint up for a binding. explicit is true
// when the bound object itself names the waypoint, so that a waypoint which
// does not serve this kind of traffic is a problem rather than a no-op.
func (b *builder) usableWaypoint(kind bindingKind, objKind, objNS, objName, wns, wname string, explicit bool) bindResult {
	key := wns + "/" + wname
	res := bindResult{waypoint: key}
	w := b.waypoints[key]
	if w == nil {
		b.problem(objKind, objNS, objName, fmt.Sprintf("waypoint %s does not exist", key))
		res.reason, res.message = ReasonWaypointIsNotReady, fmt.Sprintf("waypoint %q is not ready: it does not exist", key)
		return res
	}
	if !w.allows(kind) {
		if explicit {
			b.problem(objKind, objNS, objName, fmt.Sprintf("waypoint %s does not accept %s traffic (%s)", key, kind, LabelWaypointFor))
		}
		res.reason, res.message = ReasonUnsupportedTrafficType, unsupportedTrafficMessage(kind, key)
		return res
	}
	if w.addr == nil {
		b.problem(objKind, objNS, objName, fmt.Sprintf("waypoint %s is not ready: it %s", key, w.notReady))
		res.reason, res.message = ReasonWaypointIsNotReady, fmt.Sprintf("waypoint %q is not ready: it %s", key, w.notReady)
		return res
	}
	res.addr = w.addr
	return res
}
