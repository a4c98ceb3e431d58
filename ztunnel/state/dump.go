package state

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Dump is the State as served by the admin /config_dump endpoint; it
// marshals with encoding/json. Resources are in protojson form, sorted by
// key, all taken from one snapshot.
type Dump struct {
	Workloads []json.RawMessage `json:"workloads"`
	Services  []ServiceDump     `json:"services"`
	Policies  []json.RawMessage `json:"policies"`
	// RefusedPolicies are policies ztunnel refused with no earlier version
	// to keep; they are enforced fail-closed.
	RefusedPolicies []RefusedDump `json:"refusedPolicies,omitempty"`
}

// RefusedDump names a refused policy and why it was refused.
type RefusedDump struct {
	Name  string `json:"name"`
	Error string `json:"error"`
}

// ServiceDump is one service and the uids of its endpoints.
type ServiceDump struct {
	Service json.RawMessage `json:"service"`
	// Endpoints are the member workloads' uids.
	Endpoints []string `json:"endpoints"`
	// Candidates are the uids PickEndpoint chooses among (healthy and
	// reachable).
	Candidates []string `json:"candidates"`
}

// ConfigDump renders the current snapshot.
func (s *State) ConfigDump() (*Dump, error) {
	snap := s.cur.Load()
	d := &Dump{
		Workloads: []json.RawMessage{},
		Services:  []ServiceDump{},
		Policies:  []json.RawMessage{},
	}
	for _, uid := range slices.Sorted(maps.Keys(snap.addr.workloads)) {
		b, err := marshalJSON(snap.addr.workloads[uid].w)
		if err != nil {
			return nil, fmt.Errorf("workload %s: %w", uid, err)
		}
		d.Workloads = append(d.Workloads, b)
	}
	for _, key := range slices.Sorted(maps.Keys(snap.addr.services)) {
		svc := snap.addr.services[key]
		b, err := marshalJSON(svc.Spec)
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", key, err)
		}
		sd := ServiceDump{Service: b, Endpoints: []string{}, Candidates: []string{}}
		for _, ep := range svc.endpoints {
			sd.Endpoints = append(sd.Endpoints, ep.Workload.GetUid())
		}
		for _, i := range svc.candidates {
			sd.Candidates = append(sd.Candidates, svc.endpoints[i].Workload.GetUid())
		}
		d.Services = append(d.Services, sd)
	}
	for key, p := range snap.pol.All() {
		if err := snap.pol.Refused(key); err != nil {
			d.RefusedPolicies = append(d.RefusedPolicies, RefusedDump{Name: key, Error: err.Error()})
			continue
		}
		b, err := marshalJSON(p)
		if err != nil {
			return nil, fmt.Errorf("policy %s: %w", key, err)
		}
		d.Policies = append(d.Policies, b)
	}
	return d, nil
}

func marshalJSON(m proto.Message) (json.RawMessage, error) {
	b, err := protojson.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("protojson: %w", err)
	}
	return b, nil
}
