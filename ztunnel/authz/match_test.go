package authz

import (
	"net/netip"
	"testing"

	"github.com/zmesh/zmesh/pkg/workloadapi/security"
)

func TestParsePeer(t *testing.T) {
	tests := []struct {
		id                string
		principal, ns, sa string
	}{
		{webID, "cluster.local/ns/ns1/sa/web", "ns1", "web"},
		{"", "", "", ""},
		{"cluster.local/ns/ns1/sa/web", "", "", ""},
		{"spiffe://", "", "", ""},
		{"spiffe://example.org", "example.org", "", ""},
		{"spiffe://example.org/custom/path", "example.org/custom/path", "", ""},
		{"spiffe://td/ns/a/sa/b/c", "td/ns/a/sa/b/c", "", ""},
		{"spiffe://td/ns//sa/b", "td/ns//sa/b", "", ""},
	}
	for _, tt := range tests {
		p := parsePeer(tt.id)
		if p.principal != tt.principal || p.ns != tt.ns || p.sa != tt.sa {
			t.Errorf("parsePeer(%q) = %+v", tt.id, p)
		}
	}
}

func TestStringMatchKinds(t *testing.T) {
	tests := []struct {
		m    strMatch
		v    string
		want bool
	}{
		{strMatch{strExact, "ns1"}, "ns1", true},
		{strMatch{strExact, "ns1"}, "ns10", false},
		{strMatch{strPrefix, "team-"}, "team-a", true},
		{strMatch{strPrefix, "team-"}, "a-team-", false},
		{strMatch{strPrefix, ""}, "x", true},
		{strMatch{strSuffix, "-test"}, "ns-test", true},
		{strMatch{strSuffix, "-test"}, "ns-testing", false},
		{strMatch{strPresence, ""}, "anything", true},
		// An absent value matches no kind, not even an empty prefix.
		{strMatch{strPresence, ""}, "", false},
		{strMatch{strPrefix, ""}, "", false},
		{strMatch{strExact, ""}, "", false},
	}
	for _, tt := range tests {
		if got := tt.m.matches(tt.v); got != tt.want {
			t.Errorf("%+v.matches(%q) = %v", tt.m, tt.v, got)
		}
	}
}

// TestMatchFields covers every Match field and its negation, against an
// mTLS connection from ns1/web and a plaintext one.
func TestMatchFields(t *testing.T) {
	manyPorts := []uint32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 8080, 9000}
	tests := []struct {
		name      string
		m         *security.Match
		mtls      bool
		plaintext bool
	}{
		{"empty match holds", &security.Match{}, true, true},

		{"namespaces exact", &security.Match{Namespaces: []*security.StringMatch{exact("ns1")}}, true, false},
		{"namespaces other", &security.Match{Namespaces: []*security.StringMatch{exact("ns2")}}, false, false},
		{"namespaces any of", &security.Match{Namespaces: []*security.StringMatch{exact("ns2"), prefix("ns")}}, true, false},
		{"namespaces presence", &security.Match{Namespaces: []*security.StringMatch{presence()}}, true, false},
		{"not_namespaces own", &security.Match{NotNamespaces: []*security.StringMatch{exact("ns1")}}, false, true},
		{"not_namespaces other", &security.Match{NotNamespaces: []*security.StringMatch{exact("ns2")}}, true, true},
		{"not_namespaces presence", &security.Match{NotNamespaces: []*security.StringMatch{presence()}}, false, true},

		{"principals exact", &security.Match{Principals: []*security.StringMatch{exact("cluster.local/ns/ns1/sa/web")}}, true, false},
		{"principals exact with scheme never matches", &security.Match{Principals: []*security.StringMatch{exact(webID)}}, false, false},
		{"principals prefix", &security.Match{Principals: []*security.StringMatch{prefix("cluster.local/ns/ns1/")}}, true, false},
		{"principals suffix", &security.Match{Principals: []*security.StringMatch{suffix("/sa/web")}}, true, false},
		{"principals suffix other", &security.Match{Principals: []*security.StringMatch{suffix("/sa/admin")}}, false, false},
		{"principals presence", &security.Match{Principals: []*security.StringMatch{presence()}}, true, false},
		{"not_principals presence (STRICT)", &security.Match{NotPrincipals: []*security.StringMatch{presence()}}, false, true},
		{"not_principals exact own", &security.Match{NotPrincipals: []*security.StringMatch{exact("cluster.local/ns/ns1/sa/web")}}, false, true},
		{"not_principals suffix other", &security.Match{NotPrincipals: []*security.StringMatch{suffix("/sa/bad")}}, true, true},

		{"service_accounts own", &security.Match{ServiceAccounts: []*security.ServiceAccountMatch{sa("ns2", "x"), sa("ns1", "web")}}, true, false},
		{"service_accounts other sa", &security.Match{ServiceAccounts: []*security.ServiceAccountMatch{sa("ns1", "other")}}, false, false},
		{"service_accounts other ns", &security.Match{ServiceAccounts: []*security.ServiceAccountMatch{sa("ns2", "web")}}, false, false},
		{"not_service_accounts own", &security.Match{NotServiceAccounts: []*security.ServiceAccountMatch{sa("ns1", "web")}}, false, true},
		{"not_service_accounts other", &security.Match{NotServiceAccounts: []*security.ServiceAccountMatch{sa("ns1", "x")}}, true, true},

		{"source_ips in", &security.Match{SourceIps: []*security.Address{cidr("10.244.0.0/16")}}, true, true},
		{"source_ips host", &security.Match{SourceIps: []*security.Address{cidr("10.244.0.5/32")}}, true, true},
		{"source_ips out", &security.Match{SourceIps: []*security.Address{cidr("10.0.0.0/16"), cidr("fd00::/8")}}, false, false},
		{"source_ips unmasked prefix", &security.Match{SourceIps: []*security.Address{{Address: netip.MustParseAddr("10.244.0.77").AsSlice(), Length: 24}}}, true, true},
		{"source_ips mapped v6 prefix", &security.Match{SourceIps: []*security.Address{cidr("::ffff:10.244.0.0/112")}}, true, true},
		{"not_source_ips in", &security.Match{NotSourceIps: []*security.Address{cidr("10.244.0.0/16")}}, false, false},
		{"not_source_ips out", &security.Match{NotSourceIps: []*security.Address{cidr("192.0.2.0/24")}}, true, true},
		{"source_ips with not carve-out", &security.Match{SourceIps: []*security.Address{cidr("10.0.0.0/8")}, NotSourceIps: []*security.Address{cidr("10.244.0.0/24")}}, false, false},

		{"destination_ips in", &security.Match{DestinationIps: []*security.Address{cidr("10.244.1.1/32")}}, true, true},
		{"destination_ips out", &security.Match{DestinationIps: []*security.Address{cidr("10.96.0.1/32")}}, false, false},
		{"not_destination_ips in", &security.Match{NotDestinationIps: []*security.Address{cidr("10.244.1.0/24")}}, false, false},
		{"not_destination_ips out", &security.Match{NotDestinationIps: []*security.Address{cidr("10.96.0.0/12")}}, true, true},

		{"destination_ports in", &security.Match{DestinationPorts: []uint32{80, 8080}}, true, true},
		{"destination_ports out", &security.Match{DestinationPorts: []uint32{80}}, false, false},
		{"destination_ports many in", &security.Match{DestinationPorts: manyPorts}, true, true},
		{"destination_ports many out", &security.Match{DestinationPorts: append(manyPorts[:10:10], 9000)}, false, false},
		{"not_destination_ports in", &security.Match{NotDestinationPorts: []uint32{8080}}, false, false},
		{"not_destination_ports out", &security.Match{NotDestinationPorts: []uint32{9090}}, true, true},
		{"not_destination_ports many in", &security.Match{NotDestinationPorts: manyPorts}, false, false},

		{"all fields must hold", &security.Match{DestinationPorts: []uint32{8080}, Namespaces: []*security.StringMatch{exact("ns2")}}, false, false},
		{"all fields hold", &security.Match{DestinationPorts: []uint32{8080}, Namespaces: []*security.StringMatch{exact("ns1")},
			SourceIps: []*security.Address{cidr("10.244.0.0/16")}, NotPrincipals: []*security.StringMatch{suffix("/sa/bad")}}, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cm, err := compileMatch(tt.m)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				conn Conn
				want bool
			}{{mtls(), tt.mtls}, {plaintext(), tt.plaintext}} {
				p := parsePeer(c.conn.SrcIdentity)
				if got := cm.holds(&p, &c.conn); got != c.want {
					t.Errorf("identity %q: holds = %v, want %v", c.conn.SrcIdentity, got, c.want)
				}
			}
		})
	}
}

func TestNonWorkloadIdentity(t *testing.T) {
	c := mtls()
	c.SrcIdentity = "spiffe://example.org/custom"
	p := parsePeer(c.SrcIdentity)
	for _, tt := range []struct {
		m    *security.Match
		want bool
	}{
		{&security.Match{Principals: []*security.StringMatch{exact("example.org/custom")}}, true},
		{&security.Match{Namespaces: []*security.StringMatch{presence()}}, false},
		{&security.Match{NotNamespaces: []*security.StringMatch{presence()}}, true},
		{&security.Match{ServiceAccounts: []*security.ServiceAccountMatch{sa("custom", "x")}}, false},
	} {
		cm, err := compileMatch(tt.m)
		if err != nil {
			t.Fatal(err)
		}
		if got := cm.holds(&p, &c); got != tt.want {
			t.Errorf("%v: %v", tt.m, got)
		}
	}
}

func TestCompileErrorsFailClosed(t *testing.T) {
	bad := pol("ns1", "bad", security.Scope_GLOBAL, security.Action_ALLOW, grp(any1(&security.Match{SourceIps: []*security.Address{{Address: []byte{1}}}})))
	p, err := compile(bad)
	if err == nil || !p.broken {
		t.Fatalf("err %v broken %v", err, p.broken)
	}
	pe, c := parsePeer(webID), mtls()
	if p.matches(&pe, &c) {
		t.Fatal("broken ALLOW must match nothing")
	}
	bad.Action = security.Action_DENY
	if p, _ := compile(bad); !p.matches(&pe, &c) {
		t.Fatal("broken DENY must match everything")
	}
	if _, err := compile(pol("ns1", "x", 0, 7)); err == nil {
		t.Fatal("unknown action accepted")
	}
	if _, err := compile(pol("ns1", "x", 0, 0, grp(any1(&security.Match{Principals: []*security.StringMatch{{}}})))); err == nil {
		t.Fatal("typeless string match accepted")
	}
	if _, err := compile(pol("ns1", "x", 0, 0, grp(any1(&security.Match{DestinationPorts: []uint32{1 << 20}})))); err == nil {
		t.Fatal("bad port accepted")
	}
}
