package zmeshctl

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/zmesh/zmesh/pkg/caclient"
	"github.com/zmesh/zmesh/pkg/mtls"
	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/workloadapi/security"
	"github.com/zmesh/zmesh/pkg/xds"
	"github.com/zmesh/zmesh/ztunnel/identity"
	"github.com/zmesh/zmesh/ztunnel/state"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// The fixed clock of the test certificates.
var (
	certNotBefore = time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	certNotAfter  = time.Date(2026, 1, 3, 3, 0, 0, 0, time.UTC)
	dumpNow       = time.Date(2026, 1, 2, 15, 0, 0, 0, time.UTC)
)

func ip(s string) []byte { return netip.MustParseAddr(s).AsSlice() }

// meshState fills a real ztunnel state index through its xDS handlers: two
// pods in demo (one captured and bound to a waypoint), the waypoint, and
// the services and policies they use.
func meshState(t *testing.T) *state.State {
	t.Helper()
	st := state.New(slog.New(slog.DiscardHandler))
	wpHost := &workloadapi.GatewayAddress{
		Destination:   &workloadapi.GatewayAddress_Hostname{Hostname: &workloadapi.NamespacedHostname{Namespace: "demo", Hostname: "waypoint.demo.svc.cluster.local"}},
		HboneMtlsPort: 15008,
	}
	wpVIP := &workloadapi.GatewayAddress{
		Destination:   &workloadapi.GatewayAddress_Address{Address: &workloadapi.NetworkAddress{Address: ip("10.96.0.30")}},
		HboneMtlsPort: 15008,
	}
	workloads := []*workloadapi.Workload{
		{Uid: "Kubernetes//Pod/demo/sleep-1", Name: "sleep-1", Namespace: "demo", Addresses: [][]byte{ip("10.244.1.5")},
			Node: "node-1", ServiceAccount: "sleep", TunnelProtocol: workloadapi.TunnelProtocol_HBONE, Waypoint: wpHost,
			Services: map[string]*workloadapi.PortList{"demo/sleep.demo.svc.cluster.local": {Ports: []*workloadapi.Port{{ServicePort: 80, TargetPort: 8080}}}}},
		{Uid: "Kubernetes//Pod/demo/echo-1", Name: "echo-1", Namespace: "demo", Addresses: [][]byte{ip("10.244.2.7"), ip("fd00::7")},
			Node: "node-2", ServiceAccount: "echo", Waypoint: wpVIP,
			Services: map[string]*workloadapi.PortList{"demo/echo.demo.svc.cluster.local": {Ports: []*workloadapi.Port{{ServicePort: 80, TargetPort: 8080}}}}},
		{Uid: "Kubernetes//Pod/demo/waypoint-abc", Name: "waypoint-abc", Namespace: "demo", Addresses: [][]byte{ip("10.244.1.9")},
			Node: "node-1", ServiceAccount: "waypoint", TunnelProtocol: workloadapi.TunnelProtocol_HBONE,
			Services: map[string]*workloadapi.PortList{"demo/waypoint.demo.svc.cluster.local": {Ports: []*workloadapi.Port{{ServicePort: 15008, TargetPort: 15008}}}}},
	}
	services := []*workloadapi.Service{
		{Name: "sleep", Namespace: "demo", Hostname: "sleep.demo.svc.cluster.local",
			Addresses: []*workloadapi.NetworkAddress{{Address: ip("10.96.0.10")}}, Ports: []*workloadapi.Port{{ServicePort: 80, TargetPort: 8080}}},
		{Name: "echo", Namespace: "demo", Hostname: "echo.demo.svc.cluster.local", Waypoint: wpHost,
			Addresses: []*workloadapi.NetworkAddress{{Address: ip("10.96.0.20")}}, Ports: []*workloadapi.Port{{ServicePort: 80, TargetPort: 8080}}},
		{Name: "waypoint", Namespace: "demo", Hostname: "waypoint.demo.svc.cluster.local",
			Addresses: []*workloadapi.NetworkAddress{{Address: ip("10.96.0.30")}}, Ports: []*workloadapi.Port{{ServicePort: 15008, TargetPort: 15008}}},
	}
	var ups []xds.Upsert
	for _, w := range workloads {
		ups = append(ups, xds.Upsert{Name: w.Uid, Message: &workloadapi.Address{Type: &workloadapi.Address_Workload{Workload: w}}})
	}
	for _, s := range services {
		ups = append(ups, xds.Upsert{Name: s.Namespace + "/" + s.Hostname, Message: &workloadapi.Address{Type: &workloadapi.Address_Service{Service: s}}})
	}
	if rej := st.AddressHandler().HandleDelta(xds.Delta{TypeURL: workloadapi.AddressTypeURL, Upserts: ups}); len(rej) > 0 {
		t.Fatalf("state rejected addresses: %v", rej)
	}
	policies := []*security.Authorization{
		{Name: "istio_converted_static_strict", Namespace: "istio-system", Scope: security.Scope_WORKLOAD_SELECTOR, Action: security.Action_DENY,
			Groups: []*security.Group{{Rules: []*security.Rules{{Matches: []*security.Match{{NotPrincipals: []*security.StringMatch{{MatchType: &security.StringMatch_Presence{Presence: &emptypb.Empty{}}}}}}}}}}},
		{Name: "allow-sleep", Namespace: "demo", Scope: security.Scope_NAMESPACE, Action: security.Action_ALLOW,
			Groups: []*security.Group{{Rules: []*security.Rules{{Matches: []*security.Match{{Principals: []*security.StringMatch{{MatchType: &security.StringMatch_Exact{Exact: "cluster.local/ns/demo/sa/sleep"}}}}}}}}}},
		{Name: "mesh-audit", Namespace: "istio-system", Scope: security.Scope_GLOBAL, Action: security.Action_DENY, DryRun: true},
	}
	ups = nil
	for _, p := range policies {
		ups = append(ups, xds.Upsert{Name: p.Namespace + "/" + p.Name, Message: p})
	}
	if rej := st.AuthorizationHandler().HandleDelta(xds.Delta{TypeURL: security.AuthorizationTypeURL, Upserts: ups}); len(rej) > 0 {
		t.Fatalf("state rejected policies: %v", rej)
	}
	return st
}

// fixedCA issues certificates with fixed dates and serials for one identity
// and fails for every other, so the manager reports both kinds of status.
type fixedCA struct {
	key  *ecdsa.PrivateKey
	root *x509.Certificate
	ok   spiffeid.ID
}

var errCADown = errors.New("CA unreachable")

func newFixedCA(t *testing.T, ok spiffeid.ID) *fixedCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "root"},
		NotBefore: certNotBefore.Add(-time.Hour), NotAfter: certNotAfter.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &fixedCA{key: key, root: root, ok: ok}
}

func (c *fixedCA) Fetch(_ context.Context, req caclient.Request) (*mtls.Certificate, error) {
	if req.Identity != c.ok {
		return nil, errCADown
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(req.Identity.String())
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(0x5eed), NotBefore: certNotBefore, NotAfter: certNotAfter,
		URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.root, key.Public(), c.key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return mtls.NewCertificate(key, []*x509.Certificate{leaf}, []*x509.Certificate{c.root})
}

// meshIdentities runs a real identity manager holding one certificate and
// one identity whose fetch keeps failing.
func meshIdentities(t *testing.T) *identity.Manager {
	t.Helper()
	sleep := spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/sleep")
	echo := spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/echo")
	m, err := identity.New(identity.Options{Fetcher: newFixedCA(t, sleep), Now: func() time.Time { return dumpNow },
		RetryInitial: time.Hour, RetryMax: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	m.Acquire(sleep)
	m.Acquire(sleep)
	m.Acquire(echo)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := m.Wait(ctx, sleep); err != nil {
		t.Fatalf("identity manager: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		done := true
		for _, s := range m.Snapshot() {
			if s.Identity == echo.String() && s.LastError == "" {
				done = false
			}
		}
		if done {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatal("the failing identity never reported its error")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// adminServer serves /config_dump the way ztunnel/app's admin handler does:
// the state's ConfigDump and the identity manager's Snapshot.
func adminServer(t *testing.T) string {
	t.Helper()
	st, ids := meshState(t), meshIdentities(t)
	mux := http.NewServeMux()
	mux.HandleFunc("/config_dump", func(w http.ResponseWriter, _ *http.Request) {
		dump, err := st.ConfigDump()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(struct {
			State        any `json:"state"`
			Certificates any `json:"certificates"`
			Pods         int `json:"pods"`
		}{dump, ids.Snapshot(), 2})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// run executes zmeshctl with args and returns what it printed.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := NewCommand(&out, &errOut)
	cmd.SetArgs(args)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file:\n--- got\n%s--- want\n%s", name, got, want)
	}
}

func TestZtunnelConfigTables(t *testing.T) {
	addr := adminServer(t)
	for _, tc := range []struct{ section, golden string }{
		{"workloads", "workloads.golden"},
		{"services", "services.golden"},
		{"policies", "policies.golden"},
		{"certificates", "certificates.golden"},
		{"workload", "workloads.golden"},
		{"svc", "services.golden"},
		{"secret", "certificates.golden"},
	} {
		t.Run(tc.section, func(t *testing.T) {
			out, err := run(t, "ztunnel-config", tc.section, "--admin-addr", addr)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tc.golden, out)
		})
	}
}

func TestZtunnelConfigDataFormats(t *testing.T) {
	addr := adminServer(t)
	resp, err := http.Get("http://" + addr + "/config_dump")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var full map[string]json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&full); err != nil {
		t.Fatal(err)
	}
	var st map[string]json.RawMessage
	if err := json.Unmarshal(full["state"], &st); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		section string
		want    json.RawMessage
	}{
		{"workloads", st["workloads"]},
		{"services", st["services"]},
		{"policies", st["policies"]},
		{"certificates", sortedCerts(t, full["certificates"])},
	} {
		t.Run(tc.section+"/json", func(t *testing.T) {
			out, err := run(t, "ztunnel-config", tc.section, "--admin-addr", addr, "-o", "json")
			if err != nil {
				t.Fatal(err)
			}
			assertSameJSON(t, []byte(out), tc.want)
		})
		t.Run(tc.section+"/yaml", func(t *testing.T) {
			out, err := run(t, "ztunnel-config", tc.section, "--admin-addr", addr, "-o", "yaml")
			if err != nil {
				t.Fatal(err)
			}
			js, err := yamlToJSON([]byte(out))
			if err != nil {
				t.Fatalf("output is not YAML: %v\n%s", err, out)
			}
			assertSameJSON(t, js, tc.want)
		})
	}
}

func assertSameJSON(t *testing.T, got, want []byte) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, got)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatal(err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if !bytes.Equal(gb, wb) {
		t.Errorf("output differs from the ztunnel's data:\n got %s\nwant %s", gb, wb)
	}
}

func TestZtunnelConfigErrors(t *testing.T) {
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/config_dump":
			_, _ = io.WriteString(w, `{"state": {"workloads": [{"addresses": ["not base64!"]}]}}`)
		default:
			http.Error(w, "no", http.StatusServiceUnavailable)
		}
	}))
	defer bad.Close()
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "config dump failed", http.StatusInternalServerError)
	}))
	defer failing.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closedAddr := strings.TrimPrefix(closed.URL, "http://")
	closed.Close()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"undecodable workload", []string{"workloads", "--admin-addr", strings.TrimPrefix(bad.URL, "http://")}, "config dump workload 0"},
		{"server error", []string{"workloads", "--admin-addr", strings.TrimPrefix(failing.URL, "http://")}, "500 Internal Server Error: config dump failed"},
		{"nothing listening", []string{"services", "--admin-addr", closedAddr}, "cannot read the ztunnel's config dump"},
		{"bad format", []string{"services", "--admin-addr", closedAddr, "-o", "xml"}, "--output must be table, json or yaml"},
		{"addr and pod", []string{"services", "--admin-addr", closedAddr, "ztunnel-abc"}, "not both"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := run(t, append([]string{"ztunnel-config"}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// sortedCerts orders the ztunnel's certificate list by identity, as
// zmeshctl prints it.
func sortedCerts(t *testing.T, raw json.RawMessage) json.RawMessage {
	t.Helper()
	var certs []map[string]any
	if err := json.Unmarshal(raw, &certs); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(certs, func(a, b map[string]any) int {
		return strings.Compare(a["identity"].(string), b["identity"].(string))
	})
	out, err := json.Marshal(certs)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
