package zmeshctl

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/workloadapi/security"
)

// rawDump is the JSON a ztunnel's admin endpoint serves at /config_dump:
// the state (workloads, services and policies in protojson form) and the
// certificates of the identities it holds. It mirrors ztunnel/app's
// serveConfigDump, ztunnel/state.Dump and ztunnel/identity.Status, read as
// an external format: unknown fields are ignored.
type rawDump struct {
	State struct {
		Workloads []json.RawMessage `json:"workloads"`
		Services  []rawService      `json:"services"`
		Policies  []json.RawMessage `json:"policies"`
	} `json:"state"`
	Certificates []certStatus `json:"certificates"`
	Pods         int          `json:"pods"`
}

type rawService struct {
	Service    json.RawMessage `json:"service"`
	Endpoints  []string        `json:"endpoints"`
	Candidates []string        `json:"candidates"`
}

// certStatus is one identity's certificate as the ztunnel reports it.
type certStatus struct {
	Identity  string    `json:"identity"`
	Pods      int       `json:"pods"`
	Serial    string    `json:"serial,omitempty"`
	Issuer    string    `json:"issuer,omitempty"`
	NotBefore time.Time `json:"notBefore,omitzero"`
	NotAfter  time.Time `json:"notAfter,omitzero"`
	Valid     bool      `json:"valid"`
	LastError string    `json:"lastError,omitempty"`
}

// configDump is a decoded /config_dump.
type configDump struct {
	raw          rawDump
	workloads    []*workloadapi.Workload
	services     []serviceEntry
	policies     []*security.Authorization
	certificates []certStatus
}

type serviceEntry struct {
	svc        *workloadapi.Service
	endpoints  int
	candidates int
}

// parseConfigDump decodes a /config_dump body. The input comes from a
// process over the network: it is parsed strictly as JSON and every resource
// must decode as its workload API type.
func parseConfigDump(body []byte) (*configDump, error) {
	d := &configDump{}
	if err := json.Unmarshal(body, &d.raw); err != nil {
		return nil, fmt.Errorf("config dump is not the ztunnel's JSON: %w", err)
	}
	um := protojson.UnmarshalOptions{DiscardUnknown: true}
	for i, b := range d.raw.State.Workloads {
		w := &workloadapi.Workload{}
		if err := um.Unmarshal(b, w); err != nil {
			return nil, fmt.Errorf("config dump workload %d: %w", i, err)
		}
		d.workloads = append(d.workloads, w)
	}
	for i, s := range d.raw.State.Services {
		svc := &workloadapi.Service{}
		if err := um.Unmarshal(s.Service, svc); err != nil {
			return nil, fmt.Errorf("config dump service %d: %w", i, err)
		}
		d.services = append(d.services, serviceEntry{svc: svc, endpoints: len(s.Endpoints), candidates: len(s.Candidates)})
	}
	for i, b := range d.raw.State.Policies {
		p := &security.Authorization{}
		if err := um.Unmarshal(b, p); err != nil {
			return nil, fmt.Errorf("config dump policy %d: %w", i, err)
		}
		d.policies = append(d.policies, p)
	}
	// The ztunnel lists identities in no particular order.
	slices.SortFunc(d.raw.Certificates, func(a, b certStatus) int { return cmp.Compare(a.Identity, b.Identity) })
	d.certificates = d.raw.Certificates
	slices.SortStableFunc(d.workloads, func(a, b *workloadapi.Workload) int {
		return cmp.Or(cmp.Compare(a.GetNamespace(), b.GetNamespace()), cmp.Compare(a.GetName(), b.GetName()))
	})
	slices.SortStableFunc(d.services, func(a, b serviceEntry) int {
		return cmp.Or(cmp.Compare(a.svc.GetNamespace(), b.svc.GetNamespace()), cmp.Compare(a.svc.GetName(), b.svc.GetName()))
	})
	slices.SortStableFunc(d.policies, func(a, b *security.Authorization) int {
		return cmp.Or(cmp.Compare(a.GetNamespace(), b.GetNamespace()), cmp.Compare(a.GetName(), b.GetName()))
	})
	return d, nil
}

// ipString renders a raw 4- or 16-byte address; anything else is shown as
// invalid rather than dropped.
func ipString(b []byte) string {
	a, ok := netip.AddrFromSlice(b)
	if !ok {
		return fmt.Sprintf("invalid(%x)", b)
	}
	return a.Unmap().String()
}

// waypointName names the service a GatewayAddress points at: by hostname, or
// by VIP among the dump's services; the bare hostname or IP when no service
// matches, "None" when there is no waypoint.
func (d *configDump) waypointName(g *workloadapi.GatewayAddress) string {
	if g == nil || g.GetDestination() == nil {
		return "None"
	}
	if h := g.GetHostname(); h != nil {
		for _, s := range d.services {
			if s.svc.GetNamespace() == h.GetNamespace() && s.svc.GetHostname() == h.GetHostname() {
				return s.svc.GetName()
			}
		}
		return h.GetHostname()
	}
	a := g.GetAddress()
	for _, s := range d.services {
		for _, v := range s.svc.GetAddresses() {
			if v.GetNetwork() == a.GetNetwork() && string(v.GetAddress()) == string(a.GetAddress()) {
				return s.svc.GetName()
			}
		}
	}
	return ipString(a.GetAddress())
}
