package app

import (
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/zmesh/zmesh/controller/index"
	"github.com/zmesh/zmesh/controller/l7"
	"github.com/zmesh/zmesh/controller/xdsserver"
	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/workloadapi/security"
)

// snapshot is one index output plus what the CA asks of it.
type snapshot struct {
	out *index.Output
	// podsOnNode holds "<node>/<namespace>/<service account>" for every pod
	// workload with a node.
	podsOnNode map[string]struct{}
}

func newSnapshot(out *index.Output) *snapshot {
	s := &snapshot{out: out, podsOnNode: make(map[string]struct{}, len(out.Workloads))}
	for uid, w := range out.Workloads {
		// Only pods run on a node; WorkloadEntries and ServiceEntry
		// endpoints never qualify a node for impersonation.
		if w.GetNode() == "" || !strings.Contains(uid, "//Pod/") {
			continue
		}
		sa := w.GetServiceAccount()
		if sa == "" {
			sa = "default"
		}
		s.podsOnNode[w.GetNode()+"/"+w.GetNamespace()+"/"+sa] = struct{}{}
	}
	return s
}

// apply rebuilds the index from a source snapshot and publishes it.
func (a *App) apply(in *index.Inputs) {
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	if a.discovery.enabled() {
		var selected map[string]bool
		in, selected = a.discovery.filter(in)
		a.selected.Store(&selected)
	}
	out := index.Build(a.cfg.Index, in)
	if a.writers.status != nil {
		a.writers.status.Update(out) // the index's own verdicts, before the L7 additions
	}
	// Workloads served by a waypoint admit it past their ALLOW policies
	// (Istio's allow-from-waypoint policy).
	out = l7.AllowFromWaypoints(a.cfg.Index, in, out)
	l7out := l7.Build(l7.ConfigFromIndex(a.cfg.Index), in)
	a.logProblems(append(slices.Clip(out.Problems), l7out.Problems...))
	a.state.Store(newSnapshot(out))
	if err := a.xds.Update(workloadapi.AddressTypeURL, addressResources(out)); err != nil {
		a.log.Error("address resources not published", "err", err)
	}
	if err := a.xds.Update(security.AuthorizationTypeURL, policyResources(out)); err != nil {
		a.log.Error("authorization resources not published", "err", err)
	}
	if err := a.xds.Update(l7.ListenerTypeURL, l7out.ListenerResources()); err != nil {
		a.log.Error("waypoint listeners not published", "err", err)
	}
	if err := a.xds.Update(l7.ClusterTypeURL, l7out.ClusterResources()); err != nil {
		a.log.Error("waypoint clusters not published", "err", err)
	}
	a.log.Info("state published", "workloads", len(out.Workloads), "services", len(out.Services),
		"policies", len(out.Policies), "listeners", len(l7out.Listeners), "clusters", len(l7out.Clusters),
		"problems", len(out.Problems)+len(l7out.Problems))
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

// addressResources turns workloads and services into Address resources,
// with a "<network>/<ip>" alias per address for on-demand lookups.
func addressResources(out *index.Output) []xdsserver.Resource {
	rs := make([]xdsserver.Resource, 0, len(out.Workloads)+len(out.Services))
	for uid, w := range out.Workloads {
		var aliases []string
		for _, raw := range w.GetAddresses() {
			if ip, ok := netip.AddrFromSlice(raw); ok {
				aliases = append(aliases, w.GetNetwork()+"/"+ip.Unmap().String())
			}
		}
		rs = append(rs, xdsserver.Resource{
			Name:    uid,
			Aliases: aliases,
			Body:    &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: w}},
		})
	}
	for key, s := range out.Services {
		var aliases []string
		for _, na := range s.GetAddresses() {
			if ip, ok := netip.AddrFromSlice(na.GetAddress()); ok {
				aliases = append(aliases, na.GetNetwork()+"/"+ip.Unmap().String())
			}
		}
		rs = append(rs, xdsserver.Resource{
			Name:    key,
			Aliases: aliases,
			Body:    &workloadapi.Address{Type: &workloadapi.Address_Service{Service: s}},
		})
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].Name < rs[j].Name })
	return rs
}

func policyResources(out *index.Output) []xdsserver.Resource {
	rs := make([]xdsserver.Resource, 0, len(out.Policies))
	for key, p := range out.Policies {
		rs = append(rs, xdsserver.Resource{Name: key, Body: p})
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].Name < rs[j].Name })
	return rs
}

// nodeWorkloads answers the CA from the latest snapshot.
type nodeWorkloads struct{ a *App }

// HasWorkload reports whether a pod with that service account runs on node.
func (n nodeWorkloads) HasWorkload(node, namespace, serviceAccount string) bool {
	s := n.a.state.Load()
	if s == nil || node == "" {
		return false
	}
	_, ok := s.podsOnNode[node+"/"+namespace+"/"+serviceAccount]
	return ok
}
