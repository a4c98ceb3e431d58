package authz

import (
	"net/netip"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/zmesh/zmesh/pkg/workloadapi/security"
)

// FuzzCompile compiles arbitrary Authorization bytes and evaluates the
// result; nothing may panic, and a broken policy must fail closed.
func FuzzCompile(f *testing.F) {
	seed := pol("ns1", "p", security.Scope_NAMESPACE, security.Action_ALLOW,
		grp(any1(&security.Match{Namespaces: []*security.StringMatch{exact("ns1")}, SourceIps: []*security.Address{cidr("10.0.0.0/8")}}),
			any1(&security.Match{DestinationPorts: []uint32{80, 443}, NotPrincipals: []*security.StringMatch{presence()}})))
	b, err := proto.Marshal(seed)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b, "spiffe://cluster.local/ns/ns1/sa/web", uint16(80))
	f.Add([]byte{}, "", uint16(0))
	f.Fuzz(func(t *testing.T, data []byte, id string, port uint16) {
		a := &security.Authorization{}
		if err := proto.Unmarshal(data, a); err != nil {
			return
		}
		p, err := compile(a)
		c := Conn{SrcIdentity: id, SrcIP: netip.MustParseAddr("10.1.2.3"), DstIP: netip.MustParseAddr("fd00::1"), DstPort: port}
		pe := parsePeer(id)
		got := p.matches(&pe, &c)
		if err != nil && got != p.deny {
			t.Fatalf("broken policy (%v) did not fail closed", err)
		}
	})
}
