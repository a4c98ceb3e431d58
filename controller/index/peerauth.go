package index

import (
	"cmp"
	"slices"

	"google.golang.org/protobuf/types/known/emptypb"
	securityapi "istio.io/api/security/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"

	"github.com/zmesh/zmesh/pkg/workloadapi/security"
)

type mtlsMode = securityapi.PeerAuthentication_MutualTLS_Mode

// mtlsIndex holds the PeerAuthentications that decide each workload's mode.
// Where several could apply at one level, the oldest wins (then the first
// by name), as in Istio.
type mtlsIndex struct {
	any bool
	// mesh is the oldest selector-less policy of the root namespace.
	mesh *securityv1.PeerAuthentication
	// namespace holds the oldest selector-less policy of each namespace.
	namespace map[string]*securityv1.PeerAuthentication
	// selector holds each namespace's selector policies, oldest first.
	selector map[string][]*securityv1.PeerAuthentication
	// converted maps a selector policy to the key of its port-level DENY
	// policy, when it has one.
	converted map[*securityv1.PeerAuthentication]string
	strictKey string
}

func olderPA(x, y *securityv1.PeerAuthentication) int {
	return cmp.Or(x.CreationTimestamp.Compare(y.CreationTimestamp.Time), cmp.Compare(x.Name, y.Name))
}

// buildPeerAuthentications indexes PeerAuthentications, publishes the
// static STRICT policy when any exists, and converts port-level mTLS.
func (b *builder) buildPeerAuthentications() {
	m := &b.mtls
	m.namespace = map[string]*securityv1.PeerAuthentication{}
	m.selector = map[string][]*securityv1.PeerAuthentication{}
	m.converted = map[*securityv1.PeerAuthentication]string{}
	m.strictKey = b.cfg.RootNamespace + "/" + StaticStrictPolicyName
	for _, pa := range b.peerAuths {
		m.any = true
		if len(pa.Spec.GetSelector().GetMatchLabels()) > 0 {
			m.selector[pa.Namespace] = append(m.selector[pa.Namespace], pa)
			continue
		}
		if pa.Namespace == b.cfg.RootNamespace {
			if m.mesh == nil || olderPA(pa, m.mesh) < 0 {
				m.mesh = pa
			}
			// The root namespace's workloads also take it as their namespace policy.
		}
		if cur := m.namespace[pa.Namespace]; cur == nil || olderPA(pa, cur) < 0 {
			m.namespace[pa.Namespace] = pa
		}
	}
	if !m.any {
		return
	}
	b.out.Policies[m.strictKey] = &security.Authorization{
		Name:      StaticStrictPolicyName,
		Namespace: b.cfg.RootNamespace,
		Scope:     security.Scope_WORKLOAD_SELECTOR,
		Action:    security.Action_DENY,
		Groups: []*security.Group{{Rules: []*security.Rules{{Matches: []*security.Match{{
			NotPrincipals: []*security.StringMatch{presenceMatch()},
		}}}}}},
	}
	for ns, list := range m.selector {
		slices.SortFunc(list, olderPA)
		for _, pa := range list {
			if a := m.convertPortLevel(pa, m.inherited(ns)); a != nil {
				key := a.Namespace + "/" + a.Name
				b.out.Policies[key] = a
				m.converted[pa] = key
			}
		}
	}
}

func presenceMatch() *security.StringMatch {
	return &security.StringMatch{MatchType: &security.StringMatch_Presence{Presence: &emptypb.Empty{}}}
}

// inherited is the mode a workload of ns has before any selector policy:
// the namespace policy's, else the mesh policy's; UNSET defers upwards.
func (m *mtlsIndex) inherited(ns string) mtlsMode {
	mode := securityapi.PeerAuthentication_MutualTLS_UNSET
	if m.mesh != nil {
		mode = m.mesh.Spec.GetMtls().GetMode()
	}
	if p := m.namespace[ns]; p != nil && p != m.mesh {
		if pm := p.Spec.GetMtls().GetMode(); pm != securityapi.PeerAuthentication_MutualTLS_UNSET {
			mode = pm
		}
	}
	return mode
}

// convertPortLevel turns a selector policy with port-level mTLS into a DENY
// policy for its workloads, or nil when the workload-wide mode says it all.
// With an effective STRICT mode it denies identity-less peers except on the
// PERMISSIVE/DISABLE ports; otherwise it denies them only on the STRICT
// ports. UNSET ports follow the workload-wide mode.
func (m *mtlsIndex) convertPortLevel(pa *securityv1.PeerAuthentication, inherited mtlsMode) *security.Authorization {
	if len(pa.Spec.PortLevelMtls) == 0 {
		return nil
	}
	mode := inherited
	if pm := pa.Spec.GetMtls().GetMode(); pm != securityapi.PeerAuthentication_MutualTLS_UNSET {
		mode = pm
	}
	strict := mode == securityapi.PeerAuthentication_MutualTLS_STRICT
	var exceptions []uint32
	for port, pm := range pa.Spec.PortLevelMtls {
		switch pm.GetMode() {
		case securityapi.PeerAuthentication_MutualTLS_UNSET:
		case securityapi.PeerAuthentication_MutualTLS_STRICT:
			if !strict {
				exceptions = append(exceptions, port)
			}
		default: // PERMISSIVE, DISABLE
			if strict {
				exceptions = append(exceptions, port)
			}
		}
	}
	if len(exceptions) == 0 {
		return nil
	}
	slices.Sort(exceptions)
	var clauses []*security.Rules
	if strict {
		clauses = []*security.Rules{
			{Matches: []*security.Match{{NotPrincipals: []*security.StringMatch{presenceMatch()}}}},
			{Matches: []*security.Match{{NotDestinationPorts: exceptions}}},
		}
	} else {
		clauses = []*security.Rules{
			{Matches: []*security.Match{{NotPrincipals: []*security.StringMatch{presenceMatch()}, DestinationPorts: exceptions}}},
		}
	}
	return &security.Authorization{
		Name:      ConvertedPeerAuthenticationPrefix + pa.Name,
		Namespace: pa.Namespace,
		Scope:     security.Scope_WORKLOAD_SELECTOR,
		Action:    security.Action_DENY,
		Groups:    []*security.Group{{Rules: clauses}},
	}
}

// mtlsPolicies returns the keys of the PeerAuthentication-derived policies
// a workload of ns with labels must list: its selector policy's port-level
// DENY policy when there is one, else the static STRICT policy when its
// effective mode is STRICT.
func (b *builder) mtlsPolicies(ns string, labels map[string]string) []string {
	m := &b.mtls
	if !m.any {
		return nil
	}
	mode := m.inherited(ns)
	for _, pa := range m.selector[ns] {
		if !selects(pa.Spec.GetSelector().GetMatchLabels(), labels) {
			continue
		}
		if key, ok := m.converted[pa]; ok {
			return []string{key}
		}
		if pm := pa.Spec.GetMtls().GetMode(); pm != securityapi.PeerAuthentication_MutualTLS_UNSET {
			mode = pm
		}
		break
	}
	if mode == securityapi.PeerAuthentication_MutualTLS_STRICT {
		return []string{m.strictKey}
	}
	return nil
}
