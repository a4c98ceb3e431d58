package authz

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/workloadapi/security"
	"github.com/zmesh/zmesh/ztunnel/state"
)

// benchMesh has 21 policies applying to ns1/api — 1 GLOBAL DENY, the
// STRICT DENY, 9 NAMESPACE ALLOWs and 10 listed selector policies (DENYs
// and ALLOWs, one dry-run) — plus 100 policies of other namespaces that do
// not apply. The connection only matches the last ALLOW in key order, so
// every applicable policy is evaluated.
func benchMesh(tb testing.TB) (*state.State, *Engine, *workloadapi.Workload) {
	var pols []*security.Authorization
	var listed []string
	pols = append(pols, pol("istio-system", "deny-blocked", security.Scope_GLOBAL, security.Action_DENY,
		grp(any1(&security.Match{SourceIps: []*security.Address{cidr("192.0.2.0/24"), cidr("198.51.100.0/24")}, NotSourceIps: []*security.Address{cidr("2001:db8::/32")}}))))
	strict := pol("istio-system", "istio_converted_static_strict", security.Scope_WORKLOAD_SELECTOR, security.Action_DENY,
		grp(any1(&security.Match{NotPrincipals: []*security.StringMatch{presence()}})))
	pols = append(pols, strict)
	listed = append(listed, "istio-system/istio_converted_static_strict")
	for i := range 9 {
		pols = append(pols, pol("ns1", fmt.Sprintf("allow-ns-%d", i), security.Scope_NAMESPACE, security.Action_ALLOW,
			grp(any1(&security.Match{
				Principals: []*security.StringMatch{exact(fmt.Sprintf("cluster.local/ns/team-%d/sa/web", i)), prefix(fmt.Sprintf("cluster.local/ns/team-%d/", i))},
				Namespaces: []*security.StringMatch{exact(fmt.Sprintf("team-%d", i))},
			}), any1(&security.Match{DestinationPorts: []uint32{8080, 8443, 9090}}))))
	}
	for i := range 10 {
		name := fmt.Sprintf("sel-%02d", i)
		action := security.Action_DENY
		m := &security.Match{DestinationPorts: []uint32{22, 23, uint32(5000 + i)}, NotSourceIps: []*security.Address{cidr("10.244.0.0/16")}}
		if i%2 == 1 {
			action = security.Action_ALLOW
			m = &security.Match{ServiceAccounts: []*security.ServiceAccountMatch{sa("ns3", "reporter"), sa(fmt.Sprintf("ns%d", i+10), "x")}}
		}
		if i == 9 {
			m = &security.Match{Namespaces: []*security.StringMatch{suffix("1")}, NotPrincipals: []*security.StringMatch{suffix("/sa/evil")}}
		}
		p := pol("ns1", name, security.Scope_WORKLOAD_SELECTOR, action, grp(any1(m)))
		p.DryRun = i == 4
		pols = append(pols, p)
		listed = append(listed, "ns1/"+name)
	}
	for i := range 100 {
		pols = append(pols, pol(fmt.Sprintf("other-%d", i), "p", security.Scope_NAMESPACE, security.Action_ALLOW, fromNS1))
	}
	w := workload("ns1", "api", "10.244.1.1", listed...)
	st, e := newEngine(tb, []*workloadapi.Workload{w}, pols...)
	return st, e, w
}

func TestBenchMeshVerdict(t *testing.T) {
	_, e, w := benchMesh(t)
	v := e.Evaluate(mtls(), w)
	if !v.Allowed || v.Policy != "ns1/sel-09" || !v.DryRunApplied {
		t.Fatalf("verdict %+v", v)
	}
	if v := e.Evaluate(plaintext(), w); v.Allowed || v.Policy != "istio-system/istio_converted_static_strict" {
		t.Fatalf("plaintext verdict %+v", v)
	}
}

func TestEvaluateDoesNotAllocate(t *testing.T) {
	_, e, w := benchMesh(t)
	c, p := mtls(), plaintext()
	e.Evaluate(c, w) // compile
	if allocs := testing.AllocsPerRun(1000, func() {
		e.Evaluate(c, w)
		e.Evaluate(p, w)
	}); allocs != 0 {
		t.Fatalf("Evaluate allocates %v times", allocs)
	}
}

func BenchmarkEvaluate(b *testing.B) {
	_, e, w := benchMesh(b)
	for _, bc := range []struct {
		name string
		c    Conn
	}{
		{"mtls-allowed-last", mtls()},
		{"plaintext-denied-strict", plaintext()},
	} {
		b.Run(bc.name, func(b *testing.B) {
			e.Evaluate(bc.c, w)
			b.ReportAllocs()
			for b.Loop() {
				e.Evaluate(bc.c, w)
			}
		})
	}
}

// BenchmarkRecheckUnchanged measures a re-check of 10,000 live connections
// when nothing relevant changed (the common case on address churn).
func BenchmarkRecheckUnchanged(b *testing.B) {
	_, e, w := benchMesh(b)
	tr := NewTracker(e, nil)
	for i := range 10000 {
		c := mtls()
		c.SrcIP = netip.AddrFrom4([4]byte{10, 244, byte(i >> 8), byte(i)})
		tr.Track(c, w.GetUid(), func() {})
	}
	tr.Recheck()
	b.ReportAllocs()
	for b.Loop() {
		tr.Recheck()
	}
}
