package index

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"sort"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/workloadapi/security"
)

// Build computes every resource served to ztunnels from one snapshot.
//
// Empty Config fields take their defaults (see DefaultClusterID and friends).
// The result depends only on the content of cfg and in, never on the order of
// the Inputs slices: equal inputs give resources whose deterministic protobuf
// marshalling is byte-identical. Every repeated field that has no meaningful
// order of its own is sorted. Build never panics on bad objects: an object
// that fails Validate, or that conflicts with another, is skipped (or used in
// part) and reported in Output.Problems. Build does not modify in.
//
// A caller that builds again and again from a changing snapshot should use
// a Builder, which gives the same Output while reusing unchanged resources.
func Build(cfg Config, in *Inputs) *Output {
	if in == nil {
		in = &Inputs{}
	}
	return buildContext(cfg.withDefaults(), in).buildWorkloads(in, nil)
}

// buildContext runs the first stage of a build: everything that does not
// depend on Pods and EndpointSlices. That is every Service and Authorization,
// the statuses, the WorkloadEntry and ServiceEntry workloads, and the indexes
// pod workloads are built against. The result is never modified afterwards:
// buildWorkloads works on a copy.
func buildContext(cfg Config, in *Inputs) *builder {
	b := newBuilder(cfg, in)
	b.indexNamespaces()
	b.indexWaypoints()
	b.buildAuthorizationPolicies()
	b.buildPeerAuthentications()
	b.buildServices()
	b.buildServiceEntryServices()
	b.buildWaypointPolicyStatus()
	b.buildWorkloadEntryWorkloads()
	b.buildServiceEntryWorkloads()
	b.invalidPolicyStatus(in.AuthorizationPolicies)
	return b
}

// buildWorkloads runs the second stage on a copy of the context c: the
// workloads of EndpointSlices and Pods, added to c's. It reuses what memo
// says about pods and endpoints and updates it with this build; memo must
// be nil (nothing reused or recorded) or have been used with c only, or
// emptied of workloads since (forgetWorkloads).
func (c *builder) buildWorkloads(in *Inputs, memo *podMemo) *Output {
	b := c.stage(len(in.Pods))
	b.memo = memo
	memo.begin()
	b.endpointSlices = acceptObjects(b, kindEndpointSlice, in.EndpointSlices, validateEndpointSlice)
	b.pods = b.acceptPods(in.Pods)
	b.indexEndpointSlices()
	b.buildPodWorkloads()
	memo.sweep()
	return b.finish()
}

// builder carries the state of one Build call. Nothing in it outlives the call.
type builder struct {
	cfg Config
	out *Output

	// Valid inputs, sorted by namespace then name (pods in no order).
	namespaces      []*corev1.Namespace
	pods            []*corev1.Pod
	services        []*corev1.Service
	endpointSlices  []*discoveryv1.EndpointSlice
	authzPolicies   []*securityv1.AuthorizationPolicy
	peerAuths       []*securityv1.PeerAuthentication
	gateways        []*gatewayv1.Gateway
	serviceEntries  []*networkingv1.ServiceEntry
	workloadEntries []*networkingv1.WorkloadEntry

	nsByName map[string]*corev1.Namespace

	// Waypoints by "<ns>/<name>", and per-service-account bindings by "<ns>/<sa>".
	waypoints   map[string]*waypoint
	saWaypoints map[string]*waypoint
	// Waypoint bindings of Services and ServiceEntries by "<Kind>/<ns>/<name>".
	serviceBindings map[string]bindResult
	// reported de-duplicates Problems raised once per object.
	reported map[Problem]bool

	// Selector-scoped authorization policies by namespace.
	selectorPolicies map[string][]selectorPolicy
	// PeerAuthentication state.
	mtls mtlsIndex

	// Selecting services (Service with selector, ServiceEntry with
	// workloadSelector) by namespace, in name order.
	selectingServices map[string][]*serviceInfo
	// Selector-less Services by "<ns>/<name>".
	manualServices map[string]*serviceInfo
	// Endpoint slice membership of pods, by pod "<ns>/<name>".
	sliceMembers map[objectName][]sliceMembership
	// Published ServiceEntry hosts, in ServiceEntry order.
	seInfos []seHost

	// Second stage only (see buildWorkloads): what earlier builds with
	// the same context made of pods, updated by this one; nil for none.
	memo *podMemo
	// capture, when set, also receives every problem raised (reported
	// before or not), so that a reused pod workload can raise its own again.
	capture *[]Problem
}

func newBuilder(cfg Config, in *Inputs) *builder {
	b := &builder{
		cfg: cfg,
		out: &Output{
			Workloads:        make(map[string]*workloadapi.Workload, len(in.Pods)+len(in.WorkloadEntries)),
			Services:         make(map[string]*workloadapi.Service, len(in.Services)+len(in.ServiceEntries)),
			Policies:         make(map[string]*security.Authorization, len(in.AuthorizationPolicies)+len(in.PeerAuthentications)+1),
			ServiceWaypoints: map[string]WaypointBinding{},
			PolicyStatus:     make(map[string]PolicyStatus, len(in.AuthorizationPolicies)),
		},
		serviceBindings:   map[string]bindResult{},
		reported:          map[Problem]bool{},
		selectorPolicies:  map[string][]selectorPolicy{},
		selectingServices: map[string][]*serviceInfo{},
		manualServices:    map[string]*serviceInfo{},
		sliceMembers:      map[objectName][]sliceMembership{},
		waypoints:         map[string]*waypoint{},
		saWaypoints:       map[string]*waypoint{},
	}
	b.namespaces = acceptObjects(b, kindNamespace, in.Namespaces, validateNamespace)
	b.services = acceptObjects(b, kindService, in.Services, validateService)
	b.authzPolicies = acceptObjects(b, kindAuthorizationPolicy,
		standIns(b, kindAuthorizationPolicy, in.AuthorizationPolicies, validateAuthorizationPolicy, standInAuthorizationPolicy), validateAuthorizationPolicy)
	b.peerAuths = acceptObjects(b, kindPeerAuthentication,
		standIns(b, kindPeerAuthentication, in.PeerAuthentications, validatePeerAuthentication, standInPeerAuthentication), validatePeerAuthentication)
	b.gateways = acceptObjects(b, kindGateway, in.Gateways, validateGateway)
	b.serviceEntries = acceptObjects(b, kindServiceEntry, in.ServiceEntries, validateServiceEntry)
	b.workloadEntries = acceptObjects(b, kindWorkloadEntry, in.WorkloadEntries, validateWorkloadEntry)
	return b
}

// standIns returns list with every invalid object reported and replaced
// by its fail-closed stand-in (left out when it has none), for the kinds
// whose absence would widen access.
func standIns[T interface {
	comparable
	namedObject
}](b *builder, kind string, list []T, validate func(T) []string, standIn func(T, []string) T) []T {
	var zero T
	out := list
	copied := false
	for i, o := range list {
		if o == zero {
			continue
		}
		reasons := validate(o)
		if len(reasons) == 0 {
			continue
		}
		if !copied {
			out, copied = slices.Clone(list), true
		}
		s := standIn(o, reasons)
		how := "left out"
		if s != zero {
			how = "enforced fail-closed in its place"
		}
		b.problem(kind, o.GetNamespace(), o.GetName(), joinReasons(reasons)+" ("+how+")")
		out[i] = s
	}
	return out
}

// acceptObjects returns the valid, non-nil objects of list sorted by
// namespace and name, reporting invalid ones. Objects sharing a namespace
// and name are all refused: no choice between them would be independent of
// the order of list.
func acceptObjects[T interface {
	comparable
	namedObject
}](b *builder, kind string, list []T, validate func(T) []string) []T {
	res := acceptUnsorted(b, kind, list, validate, nil)
	slices.SortFunc(res, func(x, y T) int {
		return cmp.Or(cmp.Compare(x.GetNamespace(), y.GetNamespace()), cmp.Compare(x.GetName(), y.GetName()))
	})
	return res
}

// acceptUnsorted is acceptObjects keeping list's order. count, when not
// nil, is a scratch map it clears and uses (kept by the caller for its
// capacity).
func acceptUnsorted[T interface {
	comparable
	namedObject
}](b *builder, kind string, list []T, validate func(T) []string, count map[objectName]int) []T {
	if count == nil {
		count = make(map[objectName]int, len(list))
	} else {
		clear(count)
	}
	var zero T
	valid := make([]T, 0, len(list))
	for _, o := range list {
		if o == zero {
			continue
		}
		if reasons := validate(o); len(reasons) > 0 {
			b.problem(kind, o.GetNamespace(), o.GetName(), joinReasons(reasons))
			continue
		}
		valid = append(valid, o)
		count[objectName{o.GetNamespace(), o.GetName()}]++
	}
	res := valid[:0]
	for _, o := range valid {
		if n := count[objectName{o.GetNamespace(), o.GetName()}]; n > 1 {
			b.problem(kind, o.GetNamespace(), o.GetName(), fmt.Sprintf("%d objects share this name; none is used", n))
			continue
		}
		res = append(res, o)
	}
	return res
}

// objectName is a namespace and a name.
type objectName struct{ ns, name string }

// acceptPods accepts pods without sorting them: at tens of thousands of
// pods sorting dominated a build that reuses nearly every workload, and
// nothing pods feed depends on their order (see indexEndpointSlices for the
// one tie that is broken by name). Pods b.memo accepted before are not
// validated again.
func (b *builder) acceptPods(list []*corev1.Pod) []*corev1.Pod {
	var count map[objectName]int
	if b.memo != nil {
		if b.memo.names == nil {
			b.memo.names = make(map[objectName]int, len(list))
		}
		count = b.memo.names
	}
	return acceptUnsorted(b, kindPod, list, b.memo.validatePod, count)
}

func joinReasons(r []string) string {
	s := "invalid: "
	for i, x := range r {
		if i > 0 {
			s += "; "
		}
		s += x
	}
	return s
}

// problem records a Problem once.
func (b *builder) problem(kind, ns, name, reason string) {
	b.report(Problem{Kind: kind, Namespace: ns, Name: name, Reason: reason})
}

func (b *builder) report(p Problem) {
	if b.capture != nil {
		*b.capture = append(*b.capture, p)
	}
	if b.reported[p] {
		return
	}
	b.reported[p] = true
	b.out.Problems = append(b.out.Problems, p)
}

// stage returns a copy of the context c for the second stage: it shares
// c's indexes and Services, Policies and statuses, which the second stage
// only reads, and has its own workloads, problems and slice memberships.
func (c *builder) stage(pods int) *builder {
	b := *c
	b.out = &Output{
		Workloads:        make(map[string]*workloadapi.Workload, len(c.out.Workloads)+pods),
		Services:         c.out.Services,
		Policies:         c.out.Policies,
		Problems:         slices.Clone(c.out.Problems),
		ServiceWaypoints: c.out.ServiceWaypoints,
		PolicyStatus:     c.out.PolicyStatus,
	}
	maps.Copy(b.out.Workloads, c.out.Workloads)
	b.reported = maps.Clone(c.reported)
	b.sliceMembers = map[objectName][]sliceMembership{}
	return &b
}

func (b *builder) indexNamespaces() {
	b.nsByName = make(map[string]*corev1.Namespace, len(b.namespaces))
	for _, ns := range b.namespaces {
		b.nsByName[ns.Name] = ns
	}
}

// nsLabels returns the labels of a namespace, nil if it is unknown.
func (b *builder) nsLabels(ns string) map[string]string {
	if n := b.nsByName[ns]; n != nil {
		return n.Labels
	}
	return nil
}

func (b *builder) finish() *Output {
	sort.Slice(b.out.Problems, func(i, j int) bool {
		x, y := b.out.Problems[i], b.out.Problems[j]
		return cmp.Or(cmp.Compare(x.Kind, y.Kind), cmp.Compare(x.Namespace, y.Namespace),
			cmp.Compare(x.Name, y.Name), cmp.Compare(x.Reason, y.Reason)) < 0
	})
	return b.out
}

func sortStrings(s []string) { slices.Sort(s) }
