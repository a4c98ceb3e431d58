// Package publish turns each snapshot of the controller's sources into the
// state its xDS server serves: the workload API (Address, Authorization)
// built by controller/index, plus Istio's implicit allow-from-waypoint
// policies and the waypoints' L7 configuration (Listener, Cluster) from
// controller/l7.
//
// A Publisher keeps what it published last and reuses every message that
// did not change, so that a one-pod change costs one pod's rebuild and one
// resource's encoding even at tens of thousands of resources.
package publish

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"

	"github.com/zmesh/zmesh/controller/index"
	"github.com/zmesh/zmesh/controller/l7"
	"github.com/zmesh/zmesh/controller/xdsserver"
	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/workloadapi/security"
)

// Options configure a Publisher.
type Options struct {
	// Index shapes the workload API resources.
	Index index.Config
	// XDS receives every published resource. Required.
	XDS *xdsserver.Server
	// OnIndex, when set, is called with the index's own output (before the
	// allow-from-waypoint additions) on every Publish, before xDS is
	// updated. It must not modify it.
	OnIndex func(*index.Output)
}

// Publisher publishes snapshots. Publish calls must not overlap: the caller
// serialises them (in the order snapshots were taken).
type Publisher struct {
	opts  Options
	index *index.Builder
	allow *l7.WaypointAllower
	// The Address resources of the last Publish by the message they wrap,
	// handed out again for the same message so that xDS skips encoding it.
	// Entries carry the Publish (gen) that last used them; the others are
	// dropped. addrBuf is the resource list, reused between calls (the xDS
	// server does not keep it).
	gen       uint64
	workloads map[*workloadapi.Workload]*rendered
	services  map[*workloadapi.Service]*rendered
	addrBuf   []xdsserver.Resource
	// The L7 output of the last Publish and the objects it was built from.
	l7out     *l7.Output
	l7objects index.ObjectSet
}

// Result is what one Publish served.
type Result struct {
	// Output is the workload API as served (allow-from-waypoint policies
	// included). It is read-only and shares messages with other Results.
	Output *index.Output
	// L7 is the waypoints' configuration as served.
	L7 *l7.Output
	// Problems of the index and of the L7 translation.
	Problems []index.Problem
}

// New validates opts.
func New(opts Options) (*Publisher, error) {
	if opts.XDS == nil {
		return nil, errors.New("publish: no xDS server")
	}
	return &Publisher{
		opts:      opts,
		index:     index.NewBuilder(opts.Index),
		allow:     l7.NewWaypointAllower(opts.Index),
		workloads: map[*workloadapi.Workload]*rendered{},
		services:  map[*workloadapi.Service]*rendered{},
	}, nil
}

// Publish builds the state of in and hands it to the xDS server. in and its
// objects must never be modified afterwards (see index.Builder). Errors
// say which resource types were not updated; the others were.
func (p *Publisher) Publish(in *index.Inputs) (Result, error) {
	out := p.index.Build(in)
	if p.opts.OnIndex != nil {
		p.opts.OnIndex(out)
	}
	// Workloads served by a waypoint admit it past their ALLOW policies.
	out = p.allow.Apply(in, out)
	l7out := p.buildL7(in)
	res := Result{Output: out, L7: l7out, Problems: append(slices.Clip(out.Problems), l7out.Problems...)}

	var errs []error
	update := func(typeURL string, rs []xdsserver.Resource) {
		if err := p.opts.XDS.Update(typeURL, rs); err != nil {
			errs = append(errs, fmt.Errorf("publish %s: %w", typeURL, err))
		}
	}
	update(workloadapi.AddressTypeURL, p.addresses(out))
	update(security.AuthorizationTypeURL, policies(out))
	update(l7.ListenerTypeURL, l7out.ListenerResources())
	update(l7.ClusterTypeURL, l7out.ClusterResources())
	return res, errors.Join(errs...)
}

// buildL7 translates the waypoints' configuration, or returns the last
// Output when none of the objects it was built from changed.
func (p *Publisher) buildL7(in *index.Inputs) *l7.Output {
	if p.l7out != nil && l7Objects(in, p.l7out.PodNamespaces).Same(p.l7objects) {
		return p.l7out
	}
	out := l7.Build(l7.ConfigFromIndex(p.opts.Index), in)
	p.l7out, p.l7objects = out, l7Objects(in, out.PodNamespaces)
	return out
}

// l7Objects is the set of objects an L7 Output reading the pods of
// podNamespaces was built from. Which namespaces' pods it reads depends on
// the other objects only.
func l7Objects(in *index.Inputs, podNamespaces []string) index.ObjectSet {
	var s index.ObjectSet
	index.AddObjects(&s, in.Namespaces)
	index.AddObjects(&s, in.Services)
	index.AddObjects(&s, in.Gateways)
	index.AddObjects(&s, in.ServiceEntries)
	index.AddObjects(&s, in.AuthorizationPolicies)
	index.AddObjects(&s, in.HTTPRoutes)
	index.AddObjects(&s, in.GRPCRoutes)
	index.AddObjects(&s, in.TCPRoutes)
	index.AddObjects(&s, in.VirtualServices)
	index.AddObjects(&s, in.DestinationRules)
	index.AddObjects(&s, in.RequestAuthentications)
	index.AddObjects(&s, in.Telemetries)
	if len(podNamespaces) > 0 {
		var pods []*corev1.Pod
		for _, pod := range in.Pods {
			if pod == nil || slices.Contains(podNamespaces, pod.Namespace) {
				pods = append(pods, pod)
			}
		}
		index.AddObjects(&s, pods)
	}
	return s
}

// rendered is one Address resource and the Publish that last used it.
type rendered struct {
	gen uint64
	res xdsserver.Resource
}

// addresses renders workloads and services as Address resources, with a
// "<network>/<ip>" alias per address for on-demand lookups. The result is
// valid until the next call.
func (p *Publisher) addresses(out *index.Output) []xdsserver.Resource {
	p.gen++
	rs := p.addrBuf[:0]
	for uid, w := range out.Workloads {
		r := p.workloads[w]
		if r == nil || r.res.Name != uid {
			r = &rendered{res: xdsserver.Resource{
				Name:    uid,
				Aliases: aliases(w.GetNetwork(), w.GetAddresses()),
				Body:    &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: w}},
			}}
			p.workloads[w] = r
		}
		r.gen = p.gen
		rs = append(rs, r.res)
	}
	for key, s := range out.Services {
		r := p.services[s]
		if r == nil || r.res.Name != key {
			var as []string
			for _, na := range s.GetAddresses() {
				as = append(as, aliases(na.GetNetwork(), [][]byte{na.GetAddress()})...)
			}
			r = &rendered{res: xdsserver.Resource{
				Name:    key,
				Aliases: as,
				Body:    &workloadapi.Address{Type: &workloadapi.Address_Service{Service: s}},
			}}
			p.services[s] = r
		}
		r.gen = p.gen
		rs = append(rs, r.res)
	}
	maps.DeleteFunc(p.workloads, func(_ *workloadapi.Workload, r *rendered) bool { return r.gen != p.gen })
	maps.DeleteFunc(p.services, func(_ *workloadapi.Service, r *rendered) bool { return r.gen != p.gen })
	p.addrBuf = rs
	return rs
}

// aliases names addresses "<network>/<ip>"; malformed ones are skipped.
func aliases(network string, addrs [][]byte) []string {
	var res []string
	for _, raw := range addrs {
		if ip, ok := netip.AddrFromSlice(raw); ok {
			res = append(res, network+"/"+ip.Unmap().String())
		}
	}
	return res
}

func policies(out *index.Output) []xdsserver.Resource {
	rs := make([]xdsserver.Resource, 0, len(out.Policies))
	for key, p := range out.Policies {
		rs = append(rs, xdsserver.Resource{Name: key, Body: p})
	}
	return rs
}
