package app

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/zmesh/zmesh/controller/index"
)

// discovery implements Istio's discoverySelectors: when selectors are set,
// the controller serves, deploys waypoints for and writes status to only
// the namespaces whose labels match at least one of them. Without
// selectors every namespace is selected.
type discovery struct {
	selectors []labels.Selector
}

func newDiscovery(exprs []string) (*discovery, error) {
	d := &discovery{}
	for _, e := range exprs {
		sel, err := labels.Parse(e)
		if err != nil {
			return nil, fmt.Errorf("discovery selector %q: %w", e, err)
		}
		d.selectors = append(d.selectors, sel)
	}
	return d, nil
}

func (d *discovery) enabled() bool { return d != nil && len(d.selectors) > 0 }

// matches reports whether a namespace with these labels is selected.
func (d *discovery) matches(nsLabels map[string]string) bool {
	if !d.enabled() {
		return true
	}
	set := labels.Set(nsLabels)
	for _, s := range d.selectors {
		if s.Matches(set) {
			return true
		}
	}
	return false
}

// filter returns in without the objects of unselected namespaces, and the
// set of selected namespaces. in is not modified.
func (d *discovery) filter(in *index.Inputs) (*index.Inputs, map[string]bool) {
	selected := make(map[string]bool, len(in.Namespaces))
	out := &index.Inputs{}
	for _, ns := range in.Namespaces {
		if d.matches(ns.Labels) {
			selected[ns.Name] = true
			out.Namespaces = append(out.Namespaces, ns)
		}
	}
	out.Pods = keep(in.Pods, selected)
	out.Services = keep(in.Services, selected)
	out.EndpointSlices = keep(in.EndpointSlices, selected)
	out.AuthorizationPolicies = keep(in.AuthorizationPolicies, selected)
	out.PeerAuthentications = keep(in.PeerAuthentications, selected)
	out.Gateways = keep(in.Gateways, selected)
	out.ServiceEntries = keep(in.ServiceEntries, selected)
	out.WorkloadEntries = keep(in.WorkloadEntries, selected)
	out.HTTPRoutes = keep(in.HTTPRoutes, selected)
	out.GRPCRoutes = keep(in.GRPCRoutes, selected)
	out.TCPRoutes = keep(in.TCPRoutes, selected)
	out.VirtualServices = keep(in.VirtualServices, selected)
	out.DestinationRules = keep(in.DestinationRules, selected)
	out.RequestAuthentications = keep(in.RequestAuthentications, selected)
	out.Telemetries = keep(in.Telemetries, selected)
	return out, selected
}

func keep[T metav1.Object](objs []T, selected map[string]bool) []T {
	var out []T
	for _, o := range objs {
		if selected[o.GetNamespace()] {
			out = append(out, o)
		}
	}
	return out
}
