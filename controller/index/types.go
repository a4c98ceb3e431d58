// Package index turns Kubernetes objects into the ambient workload API.
//
// Everything here is a pure function of its inputs: Build takes a complete
// snapshot of the objects the mesh reads and returns every Workload, Service
// and Authorization resource that the controller serves. Sources (a config
// directory, or the Kubernetes API) only gather Inputs; they never shape
// resources themselves.
package index

import (
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/workloadapi/security"
)

// Inputs is one consistent snapshot of the Kubernetes objects the index reads.
// Build does not modify it; callers must not modify it while Build runs.
type Inputs struct {
	Namespaces            []*corev1.Namespace
	Pods                  []*corev1.Pod
	Services              []*corev1.Service
	EndpointSlices        []*discoveryv1.EndpointSlice
	AuthorizationPolicies []*securityv1.AuthorizationPolicy
	PeerAuthentications   []*securityv1.PeerAuthentication
	Gateways              []*gatewayv1.Gateway
	ServiceEntries        []*networkingv1.ServiceEntry
	WorkloadEntries       []*networkingv1.WorkloadEntry

	// L7 configuration. Build does not read these; the waypoint
	// configuration (controller/l7) does.
	HTTPRoutes             []*gatewayv1.HTTPRoute
	GRPCRoutes             []*gatewayv1.GRPCRoute
	TCPRoutes              []*gatewayv1.TCPRoute
	VirtualServices        []*networkingv1.VirtualService
	DestinationRules       []*networkingv1.DestinationRule
	RequestAuthentications []*securityv1.RequestAuthentication
	Telemetries            []*telemetryv1.Telemetry
}

// Config holds the mesh-wide settings that shape resources.
type Config struct {
	// ClusterID prefixes workload uids and fills Workload.cluster_id. Default "Kubernetes".
	ClusterID string
	// TrustDomain of the mesh's SPIFFE identities. Default "cluster.local".
	TrustDomain string
	// RootNamespace holds mesh-wide (GLOBAL) policy. Default "istio-system".
	RootNamespace string
	// Network names the pod network; empty is the default network.
	Network string
	// DomainSuffix completes service hostnames. Default "cluster.local".
	DomainSuffix string
	// AssumeCaptured makes enrolment alone enough for a pod's workload to use
	// HBONE. In Kubernetes it is false: the node agent writes the annotation
	// ambient.istio.io/redirection=enabled once in-pod capture works, and only
	// annotated enrolled pods are HBONE. Local mode (no API server for the
	// node agent to annotate) sets it true.
	AssumeCaptured bool
}

// withDefaults returns c with every empty field that has a default filled in.
func (c Config) withDefaults() Config {
	if c.ClusterID == "" {
		c.ClusterID = DefaultClusterID
	}
	if c.TrustDomain == "" {
		c.TrustDomain = DefaultTrustDomain
	}
	if c.RootNamespace == "" {
		c.RootNamespace = DefaultRootNamespace
	}
	if c.DomainSuffix == "" {
		c.DomainSuffix = DefaultDomainSuffix
	}
	return c
}

// Defaults applied by Build to an empty Config field.
const (
	DefaultClusterID     = "Kubernetes"
	DefaultTrustDomain   = "cluster.local"
	DefaultRootNamespace = "istio-system"
	DefaultDomainSuffix  = "cluster.local"
)

// Output is every resource the controller serves, keyed by resource name.
// Resources are freshly allocated by Build and never modified afterwards, so
// an Output may be shared between goroutines read-only. Resources of one
// Output may share sub-messages (a waypoint's GatewayAddress, the addresses
// and ports of a multi-host ServiceEntry): callers must not modify them.
type Output struct {
	// Workloads by uid.
	Workloads map[string]*workloadapi.Workload
	// Services by "<namespace>/<hostname>".
	Services map[string]*workloadapi.Service
	// Policies by "<namespace>/<name>".
	Policies map[string]*security.Authorization
	// Problems found in individual objects; each such object was skipped or
	// served in part, and the rest of the output is complete.
	Problems []Problem

	// ServiceWaypoints is the waypoint binding of every Kubernetes Service
	// that asks for a waypoint (its own istio.io/use-waypoint label or its
	// namespace's), by "<namespace>/<name>" of the Service. Services that ask
	// for none, opt out with "none", or are waypoints themselves are absent.
	// It feeds the istio.io/WaypointBound status condition.
	ServiceWaypoints map[string]WaypointBinding
	// PolicyStatus says, for every AuthorizationPolicy, whether ztunnel
	// enforces it and whether a waypoint serves it, by "<namespace>/<name>".
	// It feeds the ZtunnelAccepted and WaypointAccepted status conditions.
	PolicyStatus map[string]PolicyStatus
}

// Condition is one status condition the index derives for an object, in
// Istio's vocabulary (Reason is one CamelCase word, Message is for people).
type Condition struct {
	Status  bool
	Reason  string
	Message string
}

// WaypointBinding is the outcome of binding one Service to a waypoint.
type WaypointBinding struct {
	// Waypoint is the "<namespace>/<name>" of the waypoint Gateway asked for.
	Waypoint string
	// Condition is True (reason WaypointAccepted) when the Service's
	// resource carries the waypoint, else False with the reason.
	Condition Condition
}

// Reasons of the binding and policy conditions, as Istio writes them.
const (
	ReasonWaypointAccepted       = "WaypointAccepted"
	ReasonWaypointIsNotReady     = "WaypointIsNotReady"
	ReasonUnsupportedTrafficType = "UnsupportedTrafficType"
	ReasonAccepted               = "Accepted"
	ReasonUnsupportedValue       = "UnsupportedValue"
	ReasonInvalid                = "Invalid"
	ReasonPartiallyInvalid       = "PartiallyInvalid"
	ReasonAncestorNotBound       = "AncestorNotBound"
	ReasonTargetNotFound         = "TargetNotFound"
)

// PolicyStatus is what the index concluded about one AuthorizationPolicy.
type PolicyStatus struct {
	// Generation of the policy the conditions describe.
	Generation int64
	// Ztunnel is the ZtunnelAccepted condition; nil for policies attached
	// to waypoints with targetRefs, which ztunnel does not see.
	Ztunnel *Condition
	// Waypoint is the WaypointAccepted condition; nil for policies without
	// targetRefs.
	Waypoint *Condition
}

// Problem reports one Kubernetes object the index could not use as given.
type Problem struct {
	// Kind of the object, e.g. "Pod", "AuthorizationPolicy".
	Kind string
	// Namespace of the object; empty for cluster-scoped objects.
	Namespace string
	// Name of the object.
	Name string
	// Reason says what is wrong, in words meant for a user.
	Reason string
}

// String renders the problem as "Kind ns/name: reason".
func (p Problem) String() string {
	if p.Namespace == "" {
		return p.Kind + " " + p.Name + ": " + p.Reason
	}
	return p.Kind + " " + p.Namespace + "/" + p.Name + ": " + p.Reason
}

// Add files obj under its kind and reports whether the index reads that
// kind; objects of other kinds are ignored.
func (in *Inputs) Add(obj runtime.Object) bool {
	switch o := obj.(type) {
	case *corev1.Namespace:
		in.Namespaces = append(in.Namespaces, o)
	case *corev1.Pod:
		in.Pods = append(in.Pods, o)
	case *corev1.Service:
		in.Services = append(in.Services, o)
	case *discoveryv1.EndpointSlice:
		in.EndpointSlices = append(in.EndpointSlices, o)
	case *securityv1.AuthorizationPolicy:
		in.AuthorizationPolicies = append(in.AuthorizationPolicies, o)
	case *securityv1.PeerAuthentication:
		in.PeerAuthentications = append(in.PeerAuthentications, o)
	case *gatewayv1.Gateway:
		in.Gateways = append(in.Gateways, o)
	case *networkingv1.ServiceEntry:
		in.ServiceEntries = append(in.ServiceEntries, o)
	case *networkingv1.WorkloadEntry:
		in.WorkloadEntries = append(in.WorkloadEntries, o)
	case *gatewayv1.HTTPRoute:
		in.HTTPRoutes = append(in.HTTPRoutes, o)
	case *gatewayv1.GRPCRoute:
		in.GRPCRoutes = append(in.GRPCRoutes, o)
	case *gatewayv1.TCPRoute:
		in.TCPRoutes = append(in.TCPRoutes, o)
	case *networkingv1.VirtualService:
		in.VirtualServices = append(in.VirtualServices, o)
	case *networkingv1.DestinationRule:
		in.DestinationRules = append(in.DestinationRules, o)
	case *securityv1.RequestAuthentication:
		in.RequestAuthentications = append(in.RequestAuthentications, o)
	case *telemetryv1.Telemetry:
		in.Telemetries = append(in.Telemetries, o)
	default:
		return false
	}
	return true
}
