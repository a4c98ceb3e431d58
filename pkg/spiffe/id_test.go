package spiffe

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"net/url"
	"strings"
	"testing"
)

func TestNewIdentity(t *testing.T) {
	tests := []struct {
		name, td, ns, sa string
		want             string
		wantErr          string
	}{
		{name: "ok", td: "cluster.local", ns: "default", sa: "bookinfo", want: "spiffe://cluster.local/ns/default/sa/bookinfo"},
		{name: "dots and dashes", td: "example.org", ns: "team-a", sa: "svc.v1_x", want: "spiffe://example.org/ns/team-a/sa/svc.v1_x"},
		{name: "empty td", td: "", ns: "a", sa: "b", wantErr: "invalid trust domain"},
		{name: "upper td", td: "Cluster.Local", ns: "a", sa: "b", wantErr: "invalid trust domain"},
		{name: "empty ns", td: "cluster.local", ns: "", sa: "b", wantErr: "empty namespace"},
		{name: "empty sa", td: "cluster.local", ns: "a", sa: "", wantErr: "empty service account"},
		{name: "slash in sa", td: "cluster.local", ns: "a", sa: "b/c", wantErr: "invalid service account"},
		{name: "dot ns", td: "cluster.local", ns: "..", sa: "b", wantErr: "invalid namespace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := WorkloadID(tt.td, tt.ns, tt.sa)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if id.String() != tt.want {
				t.Fatalf("got %q want %q", id, tt.want)
			}
			back, err := ParseIdentity(id.String())
			if err != nil {
				t.Fatal(err)
			}
			if back.TrustDomain.Name() != tt.td || back.Namespace != tt.ns || back.ServiceAccount != tt.sa {
				t.Fatalf("round trip: %+v", back)
			}
			if back.String() != tt.want {
				t.Fatalf("String() = %q", back.String())
			}
		})
	}
}

func TestParseIdentity(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string
	}{
		{in: "spiffe://cluster.local/ns/a/sa/b"},
		{in: "", wantErr: "invalid SPIFFE ID"},
		{in: "https://cluster.local/ns/a/sa/b", wantErr: "invalid SPIFFE ID"},
		{in: "spiffe://cluster.local", wantErr: "not of the form"},
		{in: "spiffe://cluster.local/ns/a", wantErr: "not of the form"},
		{in: "spiffe://cluster.local/ns/a/sa/b/extra", wantErr: "not of the form"},
		{in: "spiffe://cluster.local/namespace/a/sa/b", wantErr: "not of the form"},
		{in: "spiffe://cluster.local/ns/a/serviceaccount/b", wantErr: "not of the form"},
		{in: "spiffe://cluster.local/ns//sa/b", wantErr: "invalid SPIFFE ID"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParseIdentity(tt.in)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestIdentityZero(t *testing.T) {
	if got := (Identity{}).String(); got != "" {
		t.Fatalf("zero Identity String() = %q", got)
	}
}

func TestIDFromCert(t *testing.T) {
	mk := func(uris ...string) *x509.Certificate {
		t.Helper()
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1)}
		for _, u := range uris {
			pu, err := url.Parse(u)
			if err != nil {
				t.Fatal(err)
			}
			tmpl.URIs = append(tmpl.URIs, pu)
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tests := []struct {
		name    string
		cert    *x509.Certificate
		want    string
		wantErr string
	}{
		{name: "one", cert: mk("spiffe://cluster.local/ns/a/sa/b"), want: "spiffe://cluster.local/ns/a/sa/b"},
		{name: "none", cert: mk(), wantErr: "no URI SAN"},
		{name: "two", cert: mk("spiffe://cluster.local/ns/a/sa/b", "spiffe://cluster.local/ns/a/sa/c"), wantErr: "more than one URI SAN"},
		{name: "not spiffe", cert: mk("https://example.com/x"), wantErr: "scheme"},
		{name: "nil", cert: nil, wantErr: "nil certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := IDFromCert(tt.cert)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if id.String() != tt.want {
				t.Fatalf("got %q", id)
			}
		})
	}
}
