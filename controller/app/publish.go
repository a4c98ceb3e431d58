package app

import (
	"sync"

	corev1 "k8s.io/api/core/v1"

	"github.com/zmesh/zmesh/controller/index"
	"github.com/zmesh/zmesh/controller/publish"
)

// snapshot is one published output plus what the CA asks of it.
type snapshot struct {
	out *index.Output
	// podsOnNode holds "<node>/<namespace>/<service account>" for every
	// scheduled pod that has not finished, with or without an address yet:
	// a node's ztunnel asks for a new pod's certificate as soon as the node
	// agent hands the pod over, which is before the kubelet reports the
	// pod's IP. Only pods count; WorkloadEntries and ServiceEntry endpoints
	// never qualify a node for impersonation. It is computed on the first
	// CA question, off the publishing path.
	podsOnNode func() map[string]struct{}
}

func newSnapshot(out *index.Output, pods []*corev1.Pod) *snapshot {
	return &snapshot{out: out, podsOnNode: sync.OnceValue(func() map[string]struct{} {
		res := make(map[string]struct{}, len(pods))
		for _, p := range pods {
			if p == nil || p.Spec.NodeName == "" || index.PodTerminal(p) {
				continue
			}
			sa := p.Spec.ServiceAccountName
			if sa == "" {
				sa = "default"
			}
			res[p.Spec.NodeName+"/"+p.Namespace+"/"+sa] = struct{}{}
		}
		return res
	})}
}

// apply publishes a source snapshot.
func (a *App) apply(in *index.Inputs) {
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	if a.discovery.enabled() {
		var selected map[string]bool
		in, selected = a.discovery.filter(in)
		a.selected.Store(&selected)
	}
	res, err := a.publisher.Publish(in)
	if err != nil {
		a.log.Error("state not published in full", "err", err)
	}
	a.logProblems(res.Problems)
	a.state.Store(newSnapshot(res.Output, in.Pods))
	a.log.Info("state published", "workloads", len(res.Output.Workloads), "services", len(res.Output.Services),
		"policies", len(res.Output.Policies), "listeners", len(res.L7.Listeners), "clusters", len(res.L7.Clusters),
		"problems", len(res.Problems))
}

// newPublisher publishes to the xDS server, feeding the status writer
// (when there is one) the index's own verdicts.
func (a *App) newPublisher() error {
	p, err := publish.New(publish.Options{
		Index: a.cfg.Index,
		XDS:   a.xds,
		OnIndex: func(out *index.Output) {
			if a.writers.status != nil {
				a.writers.status.Update(out)
			}
		},
	})
	if err != nil {
		return err
	}
	a.publisher = p
	return nil
}

// namespaceSelected reports whether the discovery selectors chose ns in the
// latest snapshot.
func (a *App) namespaceSelected(ns string) bool {
	if !a.discovery.enabled() {
		return true
	}
	sel := a.selected.Load()
	return sel != nil && (*sel)[ns]
}

// logProblems logs problems that are new since the last build, so that one
// bad object is reported once rather than on every rebuild.
func (a *App) logProblems(problems []index.Problem) {
	now := make(map[index.Problem]bool, len(problems))
	for _, p := range problems {
		now[p] = true
		if !a.lastProblems[p] {
			a.log.Warn("object not served as written", "kind", p.Kind, "namespace", p.Namespace, "name", p.Name, "reason", p.Reason)
		}
	}
	a.lastProblems = now
}

// nodeWorkloads answers the CA from the latest snapshot.
type nodeWorkloads struct{ a *App }

// HasWorkload reports whether a pod with that service account runs on node.
func (n nodeWorkloads) HasWorkload(node, namespace, serviceAccount string) bool {
	s := n.a.state.Load()
	if s == nil || node == "" {
		return false
	}
	_, ok := s.podsOnNode()[node+"/"+namespace+"/"+serviceAccount]
	return ok
}
