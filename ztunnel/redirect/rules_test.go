package redirect

import (
	"net/netip"
	"strings"
	"testing"
)

func TestBuildRulesShape(t *testing.T) {
	rs := buildRules(false, DefaultProbeSNATv4, netip.MustParsePrefix("127.0.0.0/8"))
	var nat []string
	for _, r := range rs.rules {
		if r.table == "nat" {
			nat = append(nat, r.chain+" "+strings.Join(r.spec, " "))
		}
	}
	want := []string{
		"ZMESH_PRERT -s 169.254.7.127/32 -p tcp -j RETURN",
		"ZMESH_PRERT ! -d 127.0.0.0/8 -p tcp ! --dport 15008 -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15006",
		"ZMESH_OUTPUT -d 169.254.7.127/32 -p tcp -j RETURN",
		"ZMESH_OUTPUT -o lo -j RETURN",
		"ZMESH_OUTPUT ! -d 127.0.0.0/8 -p tcp -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15001",
	}
	if strings.Join(nat, "\n") != strings.Join(want, "\n") {
		t.Fatalf("nat rules:\n%s\nwant:\n%s", strings.Join(nat, "\n"), strings.Join(want, "\n"))
	}

	dns := buildRules(true, DefaultProbeSNATv6, netip.MustParsePrefix("::1/128"))
	var got53 int
	for _, r := range dns.rules {
		s := strings.Join(r.spec, " ")
		if strings.Contains(s, "--dport 53") && strings.Contains(s, "--to-ports 15053") {
			got53++
		}
		if strings.Contains(s, "169.254") {
			t.Errorf("IPv6 rule with IPv4 address: %s", s)
		}
	}
	if got53 != 2 {
		t.Fatalf("DNS rules = %d, want 2 (udp and tcp)", got53)
	}
}

func TestConfigValidate(t *testing.T) {
	if _, err := New(Config{ProbeSNATv4: netip.MustParseAddr("::1")}); err == nil {
		t.Fatal("IPv6 probe address accepted as ProbeSNATv4")
	}
	r, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if r.cfg.ProbeSNATv4 != DefaultProbeSNATv4 {
		t.Fatalf("default probe address %v", r.cfg.ProbeSNATv4)
	}
}
