package l7

import (
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"unsafe"

	"google.golang.org/protobuf/proto"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/zmesh/zmesh/controller/index"
	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/workloadapi/security"
)

// AllowWaypointPolicyPrefix starts the name of the implicit policy that lets
// a waypoint reach the workloads it serves; the full name is
// "istio_allow_waypoint_<waypoint namespace>_<waypoint name>" (Istio's; "_"
// cannot appear in Kubernetes names, so it never collides).
const AllowWaypointPolicyPrefix = "istio_allow_waypoint_"

// AnnotationWaypointServiceAccount overrides the service account a waypoint
// runs as (default: the Gateway's name, as the deployer creates it).
const AnnotationWaypointServiceAccount = "gateway.istio.io/service-account"

// AllowWaypointPolicyName is the implicit policy's name for a waypoint.
func AllowWaypointPolicyName(waypointNS, waypointName string) string {
	return AllowWaypointPolicyPrefix + waypointNS + "_" + waypointName
}

// AllowFromWaypoints adds Istio's implicit "allow from waypoint" L4
// policies to an index output, so that ALLOW policies enforced by ztunnel
// on a workload do not lock out the waypoint that carries the workload's
// (or its services') traffic.
//
// For every workload that has a waypoint, or belongs to a service that has
// one, and on which at least one ALLOW policy applies (GLOBAL, NAMESPACE of
// its namespace, or listed on it), each such waypoint's policy
// "<waypoint ns>/istio_allow_waypoint_<ns>_<name>" is listed on the
// workload. The policy (scope WORKLOAD_SELECTOR, ALLOW) matches the
// waypoint's identity "<trust domain>/ns/<ns>/sa/<service account>".
// Workloads without ALLOW policies are left alone: adding an ALLOW would
// turn "allow all" into "allow only the waypoint".
//
// cfg and in must be those out was built from. out is not modified: the
// result shares every unchanged resource (and every other field) with it
// and holds copies of the workloads it changed.
func AllowFromWaypoints(cfg index.Config, in *index.Inputs, out *index.Output) *index.Output {
	return NewWaypointAllower(cfg).Apply(in, out)
}

// WaypointAllower applies AllowFromWaypoints to one index output after
// another. It remembers its decision for each workload message and reuses
// it while nothing else the decision depends on changed (the output's
// Services and Policies maps, which an index.Builder hands out again while
// their objects are unchanged, and the waypoints), handing out the very
// copy it made before, so that a one-pod change costs one decision and xDS
// skips re-encoding the rest. It is not safe for concurrent use.
type WaypointAllower struct {
	td  string
	cfg index.Config
	gen uint64
	// The environment the decisions were made in.
	services, policies unsafe.Pointer
	byAddr             map[string][]waypointID
	decisions          map[*workloadapi.Workload]*allowDecision
	// implicit are the implicit policies handed out, by key, with the
	// generation that last handed each out.
	implicit map[string]implicitPolicy
}

type implicitPolicy struct {
	p   *security.Authorization
	gen uint64
}

// allowDecision is what Apply made of one workload message.
type allowDecision struct {
	gen uint64
	// result is the workload to serve: the message itself, or a copy
	// listing the implicit policies.
	result *workloadapi.Workload
	// waypoints whose implicit policy the result lists.
	waypoints []waypointID
}

// NewWaypointAllower returns a WaypointAllower for outputs built with cfg.
func NewWaypointAllower(cfg index.Config) *WaypointAllower {
	td := cfg.TrustDomain
	if td == "" {
		td = index.DefaultTrustDomain
	}
	return &WaypointAllower{td: td, cfg: cfg, decisions: map[*workloadapi.Workload]*allowDecision{},
		implicit: map[string]implicitPolicy{}}
}

// Apply is AllowFromWaypoints for the allower's Config.
func (a *WaypointAllower) Apply(in *index.Inputs, out *index.Output) *index.Output {
	if in == nil || out == nil {
		return out
	}
	byAddr := waypointsByAddress(a.cfg, in)
	if len(byAddr) == 0 {
		clear(a.decisions)
		clear(a.implicit)
		return out
	}
	services, policies := reflect.ValueOf(out.Services).UnsafePointer(), reflect.ValueOf(out.Policies).UnsafePointer()
	if services != a.services || policies != a.policies ||
		!maps.EqualFunc(byAddr, a.byAddr, slices.Equal[[]waypointID]) {
		clear(a.decisions)
		a.services, a.policies, a.byAddr = services, policies, byAddr
	}
	a.gen++
	// Every other field of out is carried over as it is; Workloads and
	// Policies are copied before the first change (out stays as it was).
	res := new(index.Output)
	*res = *out
	copied := false
	var svcWaypoints map[string][]waypointID // computed when first needed
	for uid, w := range out.Workloads {
		d := a.decisions[w]
		if d == nil {
			if svcWaypoints == nil {
				svcWaypoints = serviceWaypoints(out, byAddr)
			}
			d = a.decide(w, out, byAddr, svcWaypoints)
			a.decisions[w] = d
		}
		d.gen = a.gen
		if d.result == w {
			continue
		}
		if !copied {
			res.Workloads, res.Policies = maps.Clone(out.Workloads), maps.Clone(out.Policies)
			copied = true
		}
		res.Workloads[uid] = d.result
		for _, wp := range d.waypoints {
			key := wp.ns + "/" + AllowWaypointPolicyName(wp.ns, wp.name)
			if _, ok := res.Policies[key]; !ok {
				res.Policies[key] = a.implicitPolicy(key, wp)
			}
		}
	}
	maps.DeleteFunc(a.decisions, func(_ *workloadapi.Workload, d *allowDecision) bool { return d.gen != a.gen })
	maps.DeleteFunc(a.implicit, func(_ string, e implicitPolicy) bool { return e.gen != a.gen })
	return res
}

// serviceWaypoints lists the waypoints of the services that have one, by
// service key.
func serviceWaypoints(out *index.Output, byAddr map[string][]waypointID) map[string][]waypointID {
	res := map[string][]waypointID{}
	for key, svc := range out.Services {
		if k, ok := gatewayKey(svc.GetWaypoint()); ok && len(byAddr[k]) > 0 {
			res[key] = byAddr[k]
		}
	}
	return res
}

// decide works out which implicit policies w must list.
func (a *WaypointAllower) decide(w *workloadapi.Workload, out *index.Output, byAddr, svcWaypoints map[string][]waypointID) *allowDecision {
	var wps []waypointID
	if k, ok := gatewayKey(w.GetWaypoint()); ok {
		wps = append(wps, byAddr[k]...)
	}
	for svcKey := range w.GetServices() {
		wps = append(wps, svcWaypoints[svcKey]...)
	}
	if len(wps) == 0 || !hasAllowPolicy(out, w) {
		return &allowDecision{result: w}
	}
	names := slices.Clone(w.AuthorizationPolicies)
	for _, wp := range wps {
		names = append(names, wp.ns+"/"+AllowWaypointPolicyName(wp.ns, wp.name))
	}
	slices.Sort(names)
	names = slices.Compact(names)
	if slices.Equal(names, w.AuthorizationPolicies) {
		return &allowDecision{result: w}
	}
	c := proto.Clone(w).(*workloadapi.Workload)
	c.AuthorizationPolicies = names
	return &allowDecision{result: c, waypoints: wps}
}

// implicitPolicy returns the implicit policy of wp, the very message
// handed out before when it is unchanged.
func (a *WaypointAllower) implicitPolicy(key string, wp waypointID) *security.Authorization {
	p := allowWaypointPolicy(a.td, wp)
	if old := a.implicit[key].p; old != nil && proto.Equal(old, p) {
		p = old
	}
	a.implicit[key] = implicitPolicy{p: p, gen: a.gen}
	return p
}

// waypointID names a waypoint and the service account it runs as.
type waypointID struct {
	ns, name, sa string
}

func allowWaypointPolicy(td string, wp waypointID) *security.Authorization {
	return &security.Authorization{
		Name:      AllowWaypointPolicyName(wp.ns, wp.name),
		Namespace: wp.ns,
		Scope:     security.Scope_WORKLOAD_SELECTOR,
		Action:    security.Action_ALLOW,
		Groups: []*security.Group{{Rules: []*security.Rules{{Matches: []*security.Match{{
			Principals: []*security.StringMatch{{MatchType: &security.StringMatch_Exact{
				Exact: td + "/ns/" + wp.ns + "/sa/" + wp.sa,
			}}},
		}}}}}},
	}
}

// hasAllowPolicy reports whether ztunnel evaluates some ALLOW policy for w.
func hasAllowPolicy(out *index.Output, w *workloadapi.Workload) bool {
	for _, k := range w.AuthorizationPolicies {
		if p := out.Policies[k]; p != nil && p.Action == security.Action_ALLOW {
			return true
		}
	}
	for _, p := range out.Policies {
		if p.Action != security.Action_ALLOW {
			continue
		}
		if p.Scope == security.Scope_GLOBAL || (p.Scope == security.Scope_NAMESPACE && p.Namespace == w.Namespace) {
			return true
		}
	}
	return false
}

// waypointsByAddress maps the GatewayAddress the index gives each waypoint
// (its first status address) back to the waypoint Gateways.
func waypointsByAddress(cfg index.Config, in *index.Inputs) map[string][]waypointID {
	res := map[string][]waypointID{}
	for _, gw := range in.Gateways {
		if gw == nil || string(gw.Spec.GatewayClassName) != index.WaypointGatewayClass || len(gw.Status.Addresses) == 0 {
			continue
		}
		sa := gw.Name
		if v := gw.Annotations[AnnotationWaypointServiceAccount]; v != "" {
			sa = v
		}
		id := waypointID{ns: gw.Namespace, name: gw.Name, sa: sa}
		a := gw.Status.Addresses[0]
		var key string
		switch {
		case a.Type == nil || *a.Type == gatewayv1.IPAddressType:
			ip, err := netip.ParseAddr(a.Value)
			if err != nil {
				continue
			}
			network := cfg.Network
			if n := gw.Labels[index.LabelNetwork]; n != "" {
				network = n
			}
			key = "ip/" + network + "/" + ip.Unmap().String()
		case *a.Type == gatewayv1.HostnameAddressType:
			key = "host/" + gw.Namespace + "/" + a.Value
		default:
			continue
		}
		if !slices.Contains(res[key], id) {
			res[key] = append(res[key], id)
		}
	}
	for k := range res {
		slices.SortFunc(res[k], func(x, y waypointID) int {
			if x.ns != y.ns {
				if x.ns < y.ns {
					return -1
				}
				return 1
			}
			if x.name < y.name {
				return -1
			}
			if x.name > y.name {
				return 1
			}
			return 0
		})
	}
	return res
}

func gatewayKey(ga *workloadapi.GatewayAddress) (string, bool) {
	if ga == nil {
		return "", false
	}
	switch d := ga.Destination.(type) {
	case *workloadapi.GatewayAddress_Address:
		ip, ok := netip.AddrFromSlice(d.Address.GetAddress())
		if !ok {
			return "", false
		}
		return "ip/" + d.Address.GetNetwork() + "/" + ip.Unmap().String(), true
	case *workloadapi.GatewayAddress_Hostname:
		return "host/" + d.Hostname.GetNamespace() + "/" + d.Hostname.GetHostname(), true
	}
	return "", false
}
