package hbone

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseAuthority(t *testing.T) {
	good := map[string]string{
		"10.0.0.1:80":        "10.0.0.1:80",
		"[fd00::1]:8080":     "[fd00::1]:8080",
		"[::ffff:1.2.3.4]:1": "[::ffff:1.2.3.4]:1",
	}
	for in, want := range good {
		ap, err := ParseAuthority(in)
		if err != nil || ap.String() != want {
			t.Errorf("ParseAuthority(%q) = %v, %v", in, ap, err)
		}
	}
	for _, in := range []string{"", "10.0.0.1", "10.0.0.1:0", "10.0.0.1:70000", "fd00::1:80", "[fd00::1]",
		"host:80", "[fe80::1%eth0]:80", "[10.0.0.1]:80", "010.0.0.1:80", " 10.0.0.1:80"} {
		if ap, err := ParseAuthority(in); err == nil {
			t.Errorf("ParseAuthority(%q) = %v, want error", in, ap)
		}
	}
}

func TestForwarded(t *testing.T) {
	v := FormatForwarded(netip.MustParseAddrPort("10.0.0.1:1234"), "")
	if v != `for="10.0.0.1:1234"` {
		t.Errorf("FormatForwarded = %s", v)
	}
	v6 := FormatForwarded(netip.MustParseAddrPort("[fd00::1]:1234"), "svc.ns.svc.cluster.local")
	if v6 != `for="[fd00::1]:1234";host=svc.ns.svc.cluster.local` {
		t.Errorf("FormatForwarded v6 = %s", v6)
	}
	for in, want := range map[string]string{
		v:                               "10.0.0.1:1234",
		v6:                              "[fd00::1]:1234",
		`for=10.0.0.9`:                  "10.0.0.9:0",
		`For="[fd00::2]", for=10.0.0.1`: "[fd00::2]:0",
		`proto=http;for="1.2.3.4:5"`:    "1.2.3.4:5",
	} {
		got, err := ParseForwardedFor(in)
		if err != nil || got.String() != want {
			t.Errorf("ParseForwardedFor(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", "for=unknown", `for="_hidden"`, "host=x", `for="fd00::1"`, `for="[fd00::1"`} {
		if got, err := ParseForwardedFor(in); err == nil {
			t.Errorf("ParseForwardedFor(%q) = %v, want error", in, got)
		}
	}
}

func TestTraceparent(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		tp := NewTraceparent()
		p, err := ParseTraceparent(tp)
		if err != nil {
			t.Fatalf("generated %q: %v", tp, err)
		}
		if p.String() != tp || seen[tp] {
			t.Fatalf("bad or repeated traceparent %q", tp)
		}
		seen[tp] = true
	}
	const valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if _, err := ParseTraceparent(valid); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseTraceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"); err != nil {
		t.Errorf("future version with extra field: %v", err)
	}
	for _, in := range []string{
		valid + "-x", strings.ToUpper(valid), "ff" + valid[2:],
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
		"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	} {
		if _, err := ParseTraceparent(in); err == nil {
			t.Errorf("ParseTraceparent(%q) succeeded", in)
		}
	}
}

func FuzzParseHeaders(f *testing.F) {
	for _, s := range []string{
		"10.0.0.1:80", "[fd00::1]:443", `for="10.0.0.1:1234";host=x`, `for="[fd00::1]:1"`,
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "", "[", `for="`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ap, err := ParseAuthority(s); err == nil {
			// Accepted authorities survive a round trip unchanged.
			back, err := ParseAuthority(ap.String())
			if err != nil || back != ap {
				t.Fatalf("authority %q → %v does not round-trip: %v, %v", s, ap, back, err)
			}
			if fwd, err := ParseForwardedFor(FormatForwarded(ap, "")); err != nil || fwd != ap {
				t.Fatalf("forwarded for %v does not round-trip: %v, %v", ap, fwd, err)
			}
		}
		if ap, err := ParseForwardedFor(s); err == nil && !ap.Addr().IsValid() {
			t.Fatalf("forwarded %q gave an invalid address", s)
		}
		if tp, err := ParseTraceparent(s); err == nil && tp.Version == 0 && tp.String() != s {
			t.Fatalf("traceparent %q re-renders as %q", s, tp.String())
		}
	})
}
