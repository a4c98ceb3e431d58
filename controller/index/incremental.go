package index

import (
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
	// pods is what the last build learnt about pods.
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
	if x.ctx == nil || !x.ctxObjects.Same(objects) {
		x.ctx, x.ctxObjects = buildContext(x.cfg, in), objects
		// Pod workloads depend on the context: none can be reused, but
		// the pods need not be validated again.
		x.pods = x.pods.withoutWorkloads()
	}
	out, memo := x.ctx.buildWorkloads(in, x.pods)
	x.pods = memo
	return out
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

// podMemo is what one build learnt about each accepted pod, by object,
// and the workloads it made of EndpointSlice endpoints that are no pod.
type podMemo struct {
	entries   map[*corev1.Pod]podEntry
	endpoints map[string]endpointEntry // by uid
}

// endpointEntry is the workload of an EndpointSlice endpoint, which
// depends only on the slice and the context.
type endpointEntry struct {
	slice    *discoveryv1.EndpointSlice
	workload *workloadapi.Workload
}

// podEntry is one pod's outcome.
type podEntry struct {
	// members are the pod's EndpointSlice memberships the workload was
	// built with; hasWorkload is false when the entry only says the pod
	// is valid (its context changed since).
	members     []sliceMembership
	hasWorkload bool
	// workload is nil for a pod without one (no IP, or finished).
	workload *workloadapi.Workload
	problems []Problem
}

func newPodMemo(n int) *podMemo {
	return &podMemo{entries: make(map[*corev1.Pod]podEntry, n), endpoints: map[string]endpointEntry{}}
}

// endpoint returns the workload uid had when made from slice, if any.
func (m *podMemo) endpoint(uid string, slice *discoveryv1.EndpointSlice) *workloadapi.Workload {
	if m == nil {
		return nil
	}
	if e, ok := m.endpoints[uid]; ok && e.slice == slice {
		return e.workload
	}
	return nil
}

func (m *podMemo) add(p *corev1.Pod, e podEntry) { m.entries[p] = e }

// lookup returns the entry of p when it can be reused for memberships
// members.
func (m *podMemo) lookup(p *corev1.Pod, members []sliceMembership) (podEntry, bool) {
	if m == nil {
		return podEntry{}, false
	}
	e, ok := m.entries[p]
	if !ok || !e.hasWorkload || !sameMemberships(e.members, members) {
		return podEntry{}, false
	}
	return e, true
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

// withoutWorkloads keeps only the knowledge that pods were valid: the
// workloads were built for another context.
func (m *podMemo) withoutWorkloads() *podMemo {
	if m == nil {
		return nil
	}
	res := newPodMemo(len(m.entries))
	for p := range m.entries {
		res.entries[p] = podEntry{}
	}
	return res
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
