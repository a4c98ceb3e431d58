package index

import (
	"maps"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/zmesh/zmesh/pkg/workloadapi"
)

// Builder builds one Output after another from a changing snapshot, and
// gives the same result as Build while redoing only what changed.
//
// A build has two stages. The context (Namespaces, Services, policies,
// Gateways, ServiceEntries, WorkloadEntries and everything derived from them
// alone) is rebuilt only when one of those objects changed; otherwise the
// Output shares the previous one's Services, Policies and statuses. Pod
// workloads are rebuilt only for pods whose object, or whose EndpointSlice
// memberships, changed, or all of them when the context changed; every
// other pod keeps the very Workload message of the previous Output, so that
// a consumer comparing messages by pointer (xdsserver) skips it.
//
// Objects are recognised by pointer: callers must never modify an object
// they passed in, and must pass a changed object as a new one. Informer
// caches and the config directory source both work that way. Outputs are
// read-only and may share messages with each other.
//
// A Builder is not safe for concurrent use.
type Builder struct {
	cfg Config
	// ctx is the context stage of the last build, nil before the first;
	// ctxObjects are the objects it was built from.
	ctx        *builder
	ctxObjects ObjectSet
	// pods is what the builds learnt about pods.
	pods *podMemo
}

// NewBuilder returns a Builder for cfg (empty fields take their defaults).
func NewBuilder(cfg Config) *Builder {
	return &Builder{cfg: cfg.withDefaults()}
}

// Build computes the Output for in; see Build (the function) for what it
// holds. in must not be modified while Build runs.
func (x *Builder) Build(in *Inputs) *Output {
	if in == nil {
		in = &Inputs{}
	}
	objects := contextObjects(in)
	if x.pods == nil {
		x.pods = newPodMemo()
	}
	if x.ctx == nil || !x.ctxObjects.Same(objects) {
		x.ctx, x.ctxObjects = buildContext(x.cfg, in), objects
		// Pod workloads depend on the context: none can be reused, but
		// the pods need not be validated again.
		x.pods.forgetWorkloads()
	}
	return x.ctx.buildWorkloads(in, x.pods)
}

// contextObjects is the set of objects the context stage reads.
func contextObjects(in *Inputs) ObjectSet {
	var s ObjectSet
	AddObjects(&s, in.Namespaces)
	AddObjects(&s, in.Services)
	AddObjects(&s, in.AuthorizationPolicies)
	AddObjects(&s, in.PeerAuthentications)
	AddObjects(&s, in.Gateways)
	AddObjects(&s, in.ServiceEntries)
	AddObjects(&s, in.WorkloadEntries)
	return s
}

// podMemo is what the builds so far learnt about each accepted pod, by
// object, and the workloads they made of EndpointSlice endpoints that are
// no pod, by uid. A build updates it in place: entries it saw are marked
// with its generation, and sweep drops the others.
type podMemo struct {
	gen       uint64
	entries   map[*corev1.Pod]*podEntry
	endpoints map[string]*endpointEntry
	// names is acceptPods' scratch map, kept for its capacity.
	names map[objectName]int
}

// podEntry is one pod's outcome.
type podEntry struct {
	gen uint64 // the last build that accepted the pod
	// members are the pod's EndpointSlice memberships the workload was
	// built with; hasWorkload is false when the entry only says the pod
	// is valid (the context changed since).
	members     []sliceMembership
	hasWorkload bool
	// workload is nil for a pod without one (no IP, or finished).
	workload *workloadapi.Workload
	problems []Problem
}

// endpointEntry is the workload of an EndpointSlice endpoint, which
// depends only on the slice and the context.
type endpointEntry struct {
	gen      uint64
	slice    *discoveryv1.EndpointSlice
	workload *workloadapi.Workload
}

func newPodMemo() *podMemo {
	return &podMemo{entries: map[*corev1.Pod]*podEntry{}, endpoints: map[string]*endpointEntry{}}
}

// begin starts a build.
func (m *podMemo) begin() {
	if m != nil {
		m.gen++
	}
}

// validatePod is validatePod, skipped for a pod object accepted before.
func (m *podMemo) validatePod(p *corev1.Pod) []string {
	if m != nil {
		if _, ok := m.entries[p]; ok {
			return nil
		}
	}
	return validatePod(p)
}

// lookup returns the entry of p when its workload can be reused for
// memberships members, and marks it seen.
func (m *podMemo) lookup(p *corev1.Pod, members []sliceMembership) (*podEntry, bool) {
	if m == nil {
		return nil, false
	}
	e := m.entries[p]
	if e == nil || !e.hasWorkload || !sameMemberships(e.members, members) {
		return nil, false
	}
	e.gen = m.gen
	return e, true
}

// record stores what the current build made of p.
func (m *podMemo) record(p *corev1.Pod, members []sliceMembership, w *workloadapi.Workload, problems []Problem) {
	if m == nil {
		return
	}
	e := m.entries[p]
	if e == nil {
		e = &podEntry{}
		m.entries[p] = e
	}
	*e = podEntry{gen: m.gen, members: members, hasWorkload: true, workload: w, problems: problems}
}

// endpoint returns the workload uid had when made from slice, if any, and
// marks it seen.
func (m *podMemo) endpoint(uid string, slice *discoveryv1.EndpointSlice) *workloadapi.Workload {
	if m == nil {
		return nil
	}
	if e := m.endpoints[uid]; e != nil && e.slice == slice {
		e.gen = m.gen
		return e.workload
	}
	return nil
}

// recordEndpoint stores the workload the current build made of an endpoint.
func (m *podMemo) recordEndpoint(uid string, slice *discoveryv1.EndpointSlice, w *workloadapi.Workload) {
	if m != nil {
		m.endpoints[uid] = &endpointEntry{gen: m.gen, slice: slice, workload: w}
	}
}

// sweep ends a build: it forgets what the build did not see.
func (m *podMemo) sweep() {
	if m == nil {
		return
	}
	maps.DeleteFunc(m.entries, func(_ *corev1.Pod, e *podEntry) bool { return e.gen != m.gen })
	maps.DeleteFunc(m.endpoints, func(_ string, e *endpointEntry) bool { return e.gen != m.gen })
}

// forgetWorkloads keeps only the knowledge that pods were valid: the
// workloads were built for another context.
func (m *podMemo) forgetWorkloads() {
	if m == nil {
		return
	}
	for _, e := range m.entries {
		*e = podEntry{gen: e.gen}
	}
	clear(m.endpoints)
}

func sameMemberships(x, y []sliceMembership) bool {
	if len(x) != len(y) {
		return false
	}
	for i := range x {
		if x[i].svc != y[i].svc || len(x[i].ports) != len(y[i].ports) {
			return false
		}
		for k, v := range x[i].ports {
			if w, ok := y[i].ports[k]; !ok || w != v {
				return false
			}
		}
	}
	return true
}
