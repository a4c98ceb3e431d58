package l7

import (
	"cmp"
	"fmt"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/zmesh/zmesh/controller/index"
)

// Config holds the mesh-wide settings that shape the L7 resources. Empty
// fields take the same defaults as index.Config. (Principals are matched
// as written in policies, so the trust domain is not needed here.)
type Config struct {
	// RootNamespace holds mesh-wide policy. Default "istio-system".
	RootNamespace string
	// DomainSuffix completes service hostnames. Default "cluster.local".
	DomainSuffix string
}

func (c Config) withDefaults() Config {
	if c.RootNamespace == "" {
		c.RootNamespace = index.DefaultRootNamespace
	}
	if c.DomainSuffix == "" {
		c.DomainSuffix = index.DefaultDomainSuffix
	}
	return c
}

// ConfigFromIndex takes the fields shared with the index's Config.
func ConfigFromIndex(c index.Config) Config {
	return Config{RootNamespace: c.RootNamespace, DomainSuffix: c.DomainSuffix}
}

// Output is every L7 resource served to waypoints. Resources are freshly
// allocated by Build and never modified afterwards; callers must not
// modify them. Listeners and Clusters are sorted by name, Problems by kind,
// namespace, name and reason.
type Output struct {
	Listeners []*listenerv3.Listener
	Clusters  []*clusterv3.Cluster
	// Problems found in individual objects; each such object was skipped
	// or used in part, and the rest of the output is complete.
	Problems []Problem
	// PodNamespaces lists, sorted, the namespaces whose pods the clusters'
	// endpoints were read from. Pods of other namespaces play no part in
	// the Output; every other input object may.
	PodNamespaces []string
}

// Problem reports one Kubernetes object that could not be used as given.
type Problem = index.Problem

// Kinds used in Problems.
const (
	kindService               = "Service"
	kindServiceEntry          = "ServiceEntry"
	kindHTTPRoute             = "HTTPRoute"
	kindGRPCRoute             = "GRPCRoute"
	kindTCPRoute              = "TCPRoute"
	kindVirtualService        = "VirtualService"
	kindDestinationRule       = "DestinationRule"
	kindAuthorizationPolicy   = "AuthorizationPolicy"
	kindRequestAuthentication = "RequestAuthentication"
	kindGateway               = "Gateway"
	kindPod                   = "Pod"
	kindTelemetry             = "Telemetry"
)

// Build computes every waypoint Listener and Cluster from one snapshot.
// It never panics on bad objects and does not modify in.
func Build(cfg Config, in *index.Inputs) *Output {
	if in == nil {
		in = &index.Inputs{}
	}
	b := newBuilder(cfg.withDefaults(), in)
	b.indexWaypoints()
	b.indexServices()
	b.indexDestinationRules()
	b.attachGatewayRoutes()
	b.attachVirtualServices()
	b.attachRequestAuthentications()
	b.attachAuthorizationPolicies()
	b.attachTelemetry()
	b.buildListeners()
	b.buildClusters()
	return b.finish()
}

// builder carries the state of one Build call.
type builder struct {
	cfg Config
	out *Output

	// Accepted inputs, sorted by namespace then name, duplicates removed.
	namespaces []*corev1.Namespace
	// allPods are the input pods, accepted (as pods) only by the
	// clusters that need endpoints; most builds need none.
	allPods    []*corev1.Pod
	services   []*corev1.Service
	gateways   []*gatewayv1.Gateway
	entries    []*networkingv1.ServiceEntry
	httpRoutes []*gatewayv1.HTTPRoute
	grpcRoutes []*gatewayv1.GRPCRoute
	tcpRoutes  []*gatewayv1.TCPRoute
	vss        []*networkingv1.VirtualService
	drs        []*networkingv1.DestinationRule
	authz      []*securityv1.AuthorizationPolicy
	reqAuthn   []*securityv1.RequestAuthentication
	// telemetries are the Telemetry resources that configure access
	// logging.
	telemetries []*telemetryv1.Telemetry

	nsLabels map[string]map[string]string
	// waypoints by "<ns>/<name>".
	waypoints map[string]*waypoint
	// svcs by "<ns>/<hostname>"; svcList in key order.
	svcs    map[string]*service
	svcList []*service
	// byHost lists the services of a hostname (ServiceEntry hosts may
	// repeat across namespaces), in namespace order.
	byHost map[string][]*service
	// drs by service key.
	dr map[string]*destRule
	// clusterRefs collects every cluster a route points at.
	clusterRefs map[string]clusterRef

	reported map[Problem]bool
}

func newBuilder(cfg Config, in *index.Inputs) *builder {
	b := &builder{
		cfg: cfg,
		out: &Output{},

		nsLabels:    map[string]map[string]string{},
		waypoints:   map[string]*waypoint{},
		svcs:        map[string]*service{},
		byHost:      map[string][]*service{},
		dr:          map[string]*destRule{},
		clusterRefs: map[string]clusterRef{},
		reported:    map[Problem]bool{},
	}
	// Kinds the index reads are held to index.Validate, so that both see
	// the same objects; the index reports those it refuses.
	b.namespaces = accept(b, "Namespace", in.Namespaces, indexValid)
	b.allPods = in.Pods
	b.services = accept(b, kindService, in.Services, indexValid)
	b.gateways = accept(b, kindGateway, in.Gateways, indexValid)
	b.entries = accept(b, kindServiceEntry, in.ServiceEntries, indexValid)
	// Policies as the index enforces them: an invalid one is replaced by
	// its fail-closed stand-in, so that a broken waypoint policy denies
	// rather than vanishes (the index reports it).
	b.authz = accept(b, kindAuthorizationPolicy, index.EnforcedAuthorizationPolicies(in.AuthorizationPolicies), nil)
	b.httpRoutes = accept(b, kindHTTPRoute, in.HTTPRoutes, nil)
	b.grpcRoutes = accept(b, kindGRPCRoute, in.GRPCRoutes, nil)
	b.tcpRoutes = accept(b, kindTCPRoute, in.TCPRoutes, nil)
	b.vss = accept(b, kindVirtualService, in.VirtualServices, nil)
	b.drs = accept(b, kindDestinationRule, in.DestinationRules, nil)
	b.reqAuthn = accept(b, kindRequestAuthentication, in.RequestAuthentications, nil)
	b.telemetries = accept(b, kindTelemetry, in.Telemetries, nil)
	for _, ns := range b.namespaces {
		b.nsLabels[ns.Name] = ns.Labels
	}
	return b
}

// namedObject is what accept needs of an object.
type namedObject interface {
	comparable
	runtime.Object
	GetNamespace() string
	GetName() string
	GetCreationTimestamp() metav1.Time
}

// indexValid reports whether the index accepts an object.
func indexValid(o runtime.Object) bool { return index.Validate(o) == nil }

// accept returns the non-nil objects of list that have a name and pass
// valid (when given; failures are skipped silently, the index reports
// them), sorted by namespace and name. Objects sharing a namespace and
// name are all refused: no choice between them would be independent of
// the order of list.
func accept[T namedObject](b *builder, kind string, list []T, valid func(runtime.Object) bool) []T {
	var zero T
	res := make([]T, 0, len(list))
	for _, o := range list {
		if o == zero {
			continue
		}
		if valid != nil && !valid(o) {
			continue
		}
		if o.GetName() == "" {
			b.problem(kind, o.GetNamespace(), o.GetName(), "has no name")
			continue
		}
		res = append(res, o)
	}
	slices.SortFunc(res, func(x, y T) int {
		return cmp.Or(cmp.Compare(x.GetNamespace(), y.GetNamespace()), cmp.Compare(x.GetName(), y.GetName()))
	})
	kept := res[:0]
	for i := 0; i < len(res); {
		j := i + 1
		for j < len(res) && res[i].GetNamespace() == res[j].GetNamespace() && res[i].GetName() == res[j].GetName() {
			j++
		}
		if j-i > 1 {
			b.problem(kind, res[i].GetNamespace(), res[i].GetName(), fmt.Sprintf("%d objects share this name; none is used", j-i))
		} else {
			kept = append(kept, res[i])
		}
		i = j
	}
	return kept
}

// olderFirst orders objects by creation time, then namespace and name:
// Gateway API's and Istio's tie-break between conflicting objects.
func olderFirst[T namedObject](x, y T) int {
	tx, ty := x.GetCreationTimestamp(), y.GetCreationTimestamp()
	return cmp.Or(tx.Compare(ty.Time), cmp.Compare(x.GetNamespace(), y.GetNamespace()), cmp.Compare(x.GetName(), y.GetName()))
}

// problem records a Problem once.
func (b *builder) problem(kind, ns, name, reason string) {
	p := Problem{Kind: kind, Namespace: ns, Name: name, Reason: reason}
	if b.reported[p] {
		return
	}
	b.reported[p] = true
	b.out.Problems = append(b.out.Problems, p)
}

func (b *builder) finish() *Output {
	slices.SortFunc(b.out.Listeners, func(x, y *listenerv3.Listener) int { return cmp.Compare(x.Name, y.Name) })
	slices.SortFunc(b.out.Clusters, func(x, y *clusterv3.Cluster) int { return cmp.Compare(x.Name, y.Name) })
	slices.SortFunc(b.out.Problems, func(x, y Problem) int {
		return cmp.Or(cmp.Compare(x.Kind, y.Kind), cmp.Compare(x.Namespace, y.Namespace),
			cmp.Compare(x.Name, y.Name), cmp.Compare(x.Reason, y.Reason))
	})
	return b.out
}
