package app

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/zmesh/zmesh/controller/ca"
	"github.com/zmesh/zmesh/controller/index"
	"github.com/zmesh/zmesh/pkg/caclient"
	"github.com/zmesh/zmesh/pkg/mtls"
	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/workloadapi/security"
	"github.com/zmesh/zmesh/pkg/xds"
)

const tokens = `# test tokens
node1-token spiffe://cluster.local/ns/istio-system/sa/ztunnel node1
node2-token spiffe://cluster.local/ns/istio-system/sa/ztunnel node2
sleep-token spiffe://cluster.local/ns/demo/sa/sleep
`

// testMesh is a controller serving a copy of examples/mesh.
type testMesh struct {
	dir, caDir, tokens string
	grpcAddr           string
	caReload           time.Duration
	app                *App
}

// newTestMesh starts a controller; prepare, when given, may fill caDir
// and set caReload first.
func newTestMesh(t *testing.T, prepare ...func(*testMesh)) *testMesh {
	t.Helper()
	m := &testMesh{dir: t.TempDir(), caDir: t.TempDir()}
	for _, p := range prepare {
		p(m)
	}
	entries, err := os.ReadDir("../../examples/mesh")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join("../../examples/mesh", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(m.dir, e.Name()), string(data))
	}
	m.tokens = filepath.Join(t.TempDir(), "tokens")
	writeFile(t, m.tokens, tokens)
	// A fixed port, so that a restarted controller comes back where clients look.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m.grpcAddr = lis.Addr().String()
	_ = lis.Close()
	m.start(t)
	return m
}

func (m *testMesh) start(t *testing.T) {
	t.Helper()
	a, err := New(Config{
		ConfigDir:        m.dir,
		CADir:            m.caDir,
		CAReloadInterval: m.caReload,
		TokensFile:       m.tokens,
		GRPCAddr:         m.grpcAddr,
		MonitoringAddr:   "127.0.0.1:0",
		Index:            index.Config{AssumeCaptured: true},
		DebounceQuiet:    10 * time.Millisecond,
		DebounceMax:      100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	m.app = a
	t.Cleanup(func() { m.app.Stop() })
}

// conn dials the controller over TLS, trusting the mesh root.
func (m *testMesh) dialOptions(t *testing.T) []grpc.DialOption {
	t.Helper()
	roots, err := mtls.ParseCertificatesPEM(m.app.RootPEM())
	if err != nil {
		t.Fatal(err)
	}
	creds, err := caclient.TransportCredentials(roots, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	return []grpc.DialOption{grpc.WithTransportCredentials(creds)}
}

// recorder keeps a client's view of one type and every delta it received.
type recorder struct {
	mu     sync.Mutex
	state  map[string]proto.Message
	deltas chan xds.Delta
}

func newRecorder() *recorder {
	return &recorder{state: map[string]proto.Message{}, deltas: make(chan xds.Delta, 100)}
}

func (r *recorder) HandleDelta(d xds.Delta) []xds.Rejection {
	r.mu.Lock()
	for _, u := range d.Upserts {
		r.state[u.Name] = u.Message
	}
	for _, name := range d.Removals {
		delete(r.state, name)
	}
	r.mu.Unlock()
	r.deltas <- d
	return nil
}

func (r *recorder) names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for n := range r.state {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (r *recorder) get(name string) proto.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state[name]
}

// next waits for the next delta.
func (r *recorder) next(t *testing.T, within time.Duration) xds.Delta {
	t.Helper()
	select {
	case d := <-r.deltas:
		return d
	case <-time.After(within):
		t.Fatalf("no delta within %v", within)
		return xds.Delta{}
	}
}

// quiet fails if a delta arrives within d.
func (r *recorder) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case got := <-r.deltas:
		t.Fatalf("unexpected delta: %d upserts %v, removals %v", len(got.Upserts), upsertNames(got), got.Removals)
	case <-time.After(d):
	}
}

func upsertNames(d xds.Delta) []string {
	var out []string
	for _, u := range d.Upserts {
		out = append(out, u.Name)
	}
	sort.Strings(out)
	return out
}

// ztunnel connects a wildcard client for both types as node1's ztunnel.
func (m *testMesh) ztunnel(t *testing.T, token string) (addrs, policies *recorder, c *xds.Client) {
	t.Helper()
	addrs, policies = newRecorder(), newRecorder()
	c, err := xds.New(xds.Config{
		Address:     m.grpcAddr,
		DialOptions: m.dialOptions(t),
		Node:        xds.Node{IP: "172.30.0.11", PodName: "ztunnel-node1", Namespace: "istio-system", NodeName: "node1"},
		Token:       func(context.Context) (string, error) { return token, nil },
		Types: []xds.TypeConfig{
			{TypeURL: workloadapi.AddressTypeURL, New: func() proto.Message { return &workloadapi.Address{} }, Handler: addrs},
			{TypeURL: security.AuthorizationTypeURL, New: func() proto.Message { return &security.Authorization{} }, Handler: policies},
		},
		Backoff: xds.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	for _, typ := range []string{workloadapi.AddressTypeURL, security.AuthorizationTypeURL} {
		select {
		case <-c.Synced(typ):
		case <-time.After(10 * time.Second):
			t.Fatalf("%s never synced", typ)
		}
	}
	// The first delta of each type is the initial state.
	addrs.next(t, time.Second)
	policies.next(t, time.Second)
	return addrs, policies, c
}

func podUID(ns, name string) string { return "Kubernetes//Pod/" + ns + "/" + name }

// expectedAddresses lists every Address the example mesh must produce.
func expectedAddresses() []string {
	var out []string
	for _, p := range []struct {
		ns, app string
		n       int
	}{{"demo", "sleep", 2}, {"demo", "httpbin", 4}, {"prod", "reviews", 4}, {"prod", "ratings", 4},
		{"prod", "details", 2}, {"legacy", "client", 2}, {"legacy", "db", 2}} {
		for i := 0; i < p.n; i++ {
			out = append(out, podUID(p.ns, fmt.Sprintf("%s-%d", p.app, i)))
		}
	}
	for _, s := range []string{"demo/httpbin", "demo/sleep", "prod/reviews", "prod/ratings", "legacy/db"} {
		ns, name, _ := strings.Cut(s, "/")
		out = append(out, ns+"/"+name+"."+ns+".svc.cluster.local")
	}
	sort.Strings(out)
	return out
}

const strictPolicy = "istio-system/istio_converted_static_strict"

func TestServesExampleMesh(t *testing.T) {
	m := newTestMesh(t)
	addrs, policies, _ := m.ztunnel(t, "node1-token")

	if got, want := addrs.names(), expectedAddresses(); !equal(got, want) {
		t.Fatalf("addresses:\n got  %v\n want %v", got, want)
	}
	wantPolicies := []string{"demo/httpbin-allow-sleep", "istio-system/deny-docker-port", strictPolicy, "prod/deny-legacy"}
	sort.Strings(wantPolicies)
	if got := policies.names(); !equal(got, wantPolicies) {
		t.Fatalf("policies:\n got  %v\n want %v", got, wantPolicies)
	}

	// Spot checks of content: enrolment, STRICT, selector policies, ports.
	w := func(ns, name string) *workloadapi.Workload {
		return addrs.get(podUID(ns, name)).(*workloadapi.Address).GetWorkload()
	}
	if tp := w("demo", "sleep-0").GetTunnelProtocol(); tp != workloadapi.TunnelProtocol_HBONE {
		t.Errorf("ambient pod tunnel %v", tp)
	}
	if tp := w("legacy", "db-0").GetTunnelProtocol(); tp != workloadapi.TunnelProtocol_NONE {
		t.Errorf("non-ambient pod tunnel %v", tp)
	}
	if ap := w("prod", "reviews-1").GetAuthorizationPolicies(); !contains(ap, strictPolicy) {
		t.Errorf("STRICT namespace pod policies %v", ap)
	}
	if ap := w("demo", "httpbin-2").GetAuthorizationPolicies(); !contains(ap, "demo/httpbin-allow-sleep") || contains(ap, strictPolicy) {
		t.Errorf("httpbin policies %v", ap)
	}
	if ports := w("demo", "httpbin-0").GetServices()["demo/httpbin.demo.svc.cluster.local"].GetPorts(); len(ports) != 1 ||
		ports[0].GetServicePort() != 80 || ports[0].GetTargetPort() != 8080 {
		t.Errorf("httpbin named targetPort not resolved: %v", ports)
	}
	if sa := w("demo", "sleep-1").GetServiceAccount(); sa != "sleep" {
		t.Errorf("service account %q", sa)
	}
	svc := addrs.get("prod/ratings.prod.svc.cluster.local").(*workloadapi.Address).GetService()
	if p := svc.GetPorts(); len(p) != 1 || p[0].GetAppProtocol() != workloadapi.AppProtocol_GRPC {
		t.Errorf("ratings ports %v", p)
	}
	strict := policies.get(strictPolicy).(*security.Authorization)
	if strict.GetAction() != security.Action_DENY {
		t.Errorf("strict policy %v", strict)
	}
}

// TestEditDeliversOnlyChanges edits one pod and checks the delta that
// follows holds exactly that pod, within a second.
func TestEditDeliversOnlyChanges(t *testing.T) {
	m := newTestMesh(t)
	addrs, policies, _ := m.ztunnel(t, "node1-token")

	pods := filepath.Join(m.dir, "pods.yaml")
	data, err := os.ReadFile(pods)
	if err != nil {
		t.Fatal(err)
	}
	// Make httpbin-0 unready: only its workload changes.
	edited := replaceInDoc(t, string(data), "name: httpbin-0\n", `status: "True"`, `status: "False"`)
	start := time.Now()
	writeFile(t, pods, edited)
	d := addrs.next(t, time.Second)
	t.Logf("one-pod edit delivered in %v", time.Since(start))
	if got := upsertNames(d); !equal(got, []string{podUID("demo", "httpbin-0")}) || len(d.Removals) != 0 {
		t.Fatalf("delta upserts %v removals %v", got, d.Removals)
	}
	if st := addrs.get(podUID("demo", "httpbin-0")).(*workloadapi.Address).GetWorkload().GetStatus(); st != workloadapi.WorkloadStatus_UNHEALTHY {
		t.Errorf("status %v", st)
	}
	addrs.quiet(t, 200*time.Millisecond)
	policies.quiet(t, 0)

	// A new selector policy: the policy and the pods it now lists change.
	writeFile(t, filepath.Join(m.dir, "sleep-policy.yaml"), `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: sleep-deny-legacy, namespace: demo}
spec:
  selector: {matchLabels: {app: sleep}}
  action: DENY
  rules: [{from: [{source: {namespaces: [legacy]}}]}]
`)
	pd := policies.next(t, time.Second)
	if got := upsertNames(pd); !equal(got, []string{"demo/sleep-deny-legacy"}) {
		t.Errorf("policy delta %v", got)
	}
	ad := addrs.next(t, time.Second)
	if got := upsertNames(ad); !equal(got, []string{podUID("demo", "sleep-0"), podUID("demo", "sleep-1")}) {
		t.Errorf("address delta %v", got)
	}

	// Removing it removes the policy.
	if err := os.Remove(filepath.Join(m.dir, "sleep-policy.yaml")); err != nil {
		t.Fatal(err)
	}
	pd = policies.next(t, time.Second)
	if !equal(pd.Removals, []string{"demo/sleep-deny-legacy"}) || len(pd.Upserts) != 0 {
		t.Errorf("removal delta %v %v", upsertNames(pd), pd.Removals)
	}
}

// TestBadInputKeepsLastGoodState breaks files and checks that nothing
// served changes, except that a new invalid policy is enforced
// fail-closed, while the problems are reported with file and reason.
func TestBadInputKeepsLastGoodState(t *testing.T) {
	m := newTestMesh(t)
	addrs, policies, _ := m.ztunnel(t, "node1-token")

	writeFile(t, filepath.Join(m.dir, "pods.yaml"), "apiVersion: v1\nkind: Pod\nmetadata: {name: [broken\n")
	writeFile(t, filepath.Join(m.dir, "policies.yaml"), `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad, namespace: demo}
spec:
  action: ALLOW
  rules: [{from: [{source: {ipBlocks: ["10.0.0.300/8"]}}]}]
`)
	// The new ALLOW policy is invalid: served as allow-nothing, not left out.
	pd := policies.next(t, time.Second)
	if got := upsertNames(pd); !equal(got, []string{"demo/bad"}) {
		t.Fatalf("policy delta %v", got)
	}
	if az := policies.get("demo/bad").(*security.Authorization); az.GetAction() != security.Action_ALLOW || len(az.GetGroups()) != 0 {
		t.Errorf("invalid ALLOW served as %v", az)
	}
	addrs.quiet(t, 500*time.Millisecond)
	policies.quiet(t, 0)

	dump := m.configDump(t)
	files := map[string]string{}
	for _, p := range dump.FileProblems {
		files[p.File] = p.Reason
	}
	if !strings.Contains(files["pods.yaml"], "invalid YAML") {
		t.Errorf("pods.yaml problem: %q", files["pods.yaml"])
	}
	if !strings.Contains(files["policies.yaml"], "demo/bad") {
		t.Errorf("policies.yaml problem: %q", files["policies.yaml"])
	}
	if len(dump.Workloads) != 20 || len(dump.Policies) != 5 {
		t.Errorf("config dump has %d workloads and %d policies", len(dump.Workloads), len(dump.Policies))
	}
	// A newly connecting client gets the same state.
	addrs2, policies2, _ := m.ztunnel(t, "node2-token")
	if got := addrs2.names(); !equal(got, expectedAddresses()) {
		t.Errorf("new client addresses %v", got)
	}
	if n := len(policies2.names()); n != 5 {
		t.Errorf("new client has %d policies", n)
	}
}

// TestReconnectReceivesOnlyChanges restarts the controller under a
// connected client, with one edit made while it was down: after the client
// reconnects with initial_resource_versions, only that edit arrives.
func TestReconnectReceivesOnlyChanges(t *testing.T) {
	m := newTestMesh(t)
	addrs, policies, _ := m.ztunnel(t, "node1-token")

	m.app.Stop()
	svcs := filepath.Join(m.dir, "services.yaml")
	data, err := os.ReadFile(svcs)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, svcs, strings.Replace(string(data), "port: 5432", "port: 5433", 1))
	m.start(t)

	d := addrs.next(t, 10*time.Second)
	if got := upsertNames(d); !equal(got, []string{podUID("legacy", "db-0"), podUID("legacy", "db-1"), "legacy/db.legacy.svc.cluster.local"}) ||
		len(d.Removals) != 0 {
		t.Fatalf("after reconnect: upserts %v removals %v", got, d.Removals)
	}
	// Policies did not change: the first response on the new stream is empty,
	// telling the client that what it holds is current.
	if pd := policies.next(t, 5*time.Second); len(pd.Upserts)+len(pd.Removals) != 0 {
		t.Fatalf("policies resent after reconnect: %v %v", upsertNames(pd), pd.Removals)
	}
	addrs.quiet(t, 300*time.Millisecond)
	policies.quiet(t, 300*time.Millisecond)
	if got := addrs.names(); !equal(got, expectedAddresses()) {
		t.Errorf("state after reconnect %v", got)
	}
}

func TestRefusesUnauthenticatedStreams(t *testing.T) {
	m := newTestMesh(t)
	c, err := xds.New(xds.Config{
		Address:     m.grpcAddr,
		DialOptions: m.dialOptions(t),
		Node:        xds.Node{IP: "172.30.0.11", PodName: "x", Namespace: "x"},
		Token:       func(context.Context) (string, error) { return "wrong-token", nil },
		Types: []xds.TypeConfig{{TypeURL: workloadapi.AddressTypeURL,
			New: func() proto.Message { return &workloadapi.Address{} }, Handler: newRecorder()}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	select {
	case <-c.Synced(workloadapi.AddressTypeURL):
		t.Fatal("an unauthenticated client received state")
	case <-time.After(500 * time.Millisecond):
	}
}

// TestCertificates exercises the CA through the running controller.
func TestCertificates(t *testing.T) {
	m := newTestMesh(t)
	conn, err := grpc.NewClient(m.grpcAddr, m.dialOptions(t)...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	roots, _ := mtls.ParseCertificatesPEM(m.app.RootPEM())
	id := func(s string) spiffeid.ID { return spiffeid.RequireFromString(s) }
	tests := []struct {
		name        string
		token       string
		identity    string
		impersonate bool
		want        codes.Code
	}{
		{"node impersonates an account with a pod on its node", "node1-token", "spiffe://cluster.local/ns/demo/sa/sleep", true, codes.OK},
		{"node2 impersonates an account with a pod there", "node2-token", "spiffe://cluster.local/ns/demo/sa/sleep", true, codes.OK},
		{"node impersonates an account with no pod on its node", "node1-token", "spiffe://cluster.local/ns/prod/sa/nobody", true, codes.Unauthenticated},
		{"node impersonates an account of another namespace's name", "node1-token", "spiffe://cluster.local/ns/prod/sa/sleep", true, codes.Unauthenticated},
		{"workload asks for its own identity", "sleep-token", "spiffe://cluster.local/ns/demo/sa/sleep", false, codes.OK},
		{"non-node caller impersonates", "sleep-token", "spiffe://cluster.local/ns/demo/sa/httpbin", true, codes.Unauthenticated},
		{"unknown token", "nope", "spiffe://cluster.local/ns/demo/sa/sleep", false, codes.Unauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := caclient.New(conn, caclient.Options{Roots: roots, Token: tt.token})
			if err != nil {
				t.Fatal(err)
			}
			cert, err := c.Fetch(context.Background(), caclient.Request{Identity: id(tt.identity), Impersonate: tt.impersonate})
			if got := status.Code(err); got != tt.want {
				t.Fatalf("code %v (%v), want %v", got, err, tt.want)
			}
			if err == nil {
				if got, _ := spiffeid.FromURI(cert.Leaf().URIs[0]); got.String() != tt.identity {
					t.Errorf("certificate for %v", got)
				}
			}
		})
	}
}

func (m *testMesh) configDump(t *testing.T) configDumpView {
	t.Helper()
	resp, err := http.Get("http://" + m.app.MonitoringAddr().String() + "/debug/config_dump")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var v configDumpView
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("config dump %s: %v", body, err)
	}
	return v
}

type configDumpView struct {
	Workloads    []json.RawMessage `json:"workloads"`
	Policies     []json.RawMessage `json:"policies"`
	FileProblems []struct{ File, Reason string }
}

// replaceInDoc replaces old with new in the YAML document containing marker.
func replaceInDoc(t *testing.T, all, marker, old, new string) string {
	t.Helper()
	docs := strings.Split(all, "\n---\n")
	for i, d := range docs {
		if strings.Contains(d, marker) {
			if !strings.Contains(d, old) {
				t.Fatalf("%q not in document %q", old, marker)
			}
			docs[i] = strings.Replace(d, old, new, 1)
			return strings.Join(docs, "\n---\n")
		}
	}
	t.Fatalf("no document contains %q", marker)
	return ""
}

// writeFile replaces path atomically.
func writeFile(t *testing.T, path, body string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// writePluggedCA writes a plugged-in CA to dir: signer (a root here)
// signs, and root-cert.pem lists bundle.
func writePluggedCA(t *testing.T, dir string, signer *ca.SigningMaterial, bundle ...*x509.Certificate) {
	t.Helper()
	key, err := mtls.EncodePrivateKeyPEM(signer.Key)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, ca.CAKeyFile), string(key))
	writeFile(t, filepath.Join(dir, ca.CACertFile), string(mtls.EncodeCertificatesPEM(signer.Cert)))
	writeFile(t, filepath.Join(dir, ca.RootCertFile), string(mtls.EncodeCertificatesPEM(bundle...)))
}

// TestPluggedCARotation: replacing a plugged-in CA's files while the
// controller runs (a root rotation: the new root joins the bundle and
// signs) reaches new workload certificates, the published trust bundle and
// the controller's own serving certificate, without a restart.
func TestPluggedCARotation(t *testing.T) {
	oldCA, err := ca.GenerateRoot("cluster.local", 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	newCA, err := ca.GenerateRoot("cluster.local", 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	m := newTestMesh(t, func(m *testMesh) {
		writePluggedCA(t, m.caDir, oldCA, oldCA.Root)
		m.caReload = 20 * time.Millisecond
	})
	dial := func(roots []*x509.Certificate) (*grpc.ClientConn, error) {
		creds, err := caclient.TransportCredentials(roots, "localhost")
		if err != nil {
			return nil, err
		}
		return grpc.NewClient(m.grpcAddr, grpc.WithTransportCredentials(creds))
	}
	fetch := func(roots []*x509.Certificate) (*mtls.Certificate, error) {
		conn, err := dial(roots)
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		c, err := caclient.New(conn, caclient.Options{Roots: roots, Token: "sleep-token"})
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return c.Fetch(ctx, caclient.Request{Identity: spiffeid.RequireFromString("spiffe://cluster.local/ns/demo/sa/sleep")})
	}
	cert, err := fetch([]*x509.Certificate{oldCA.Root})
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.Leaf().CheckSignatureFrom(oldCA.Root); err != nil {
		t.Fatalf("first certificate not signed by the plugged-in CA: %v", err)
	}

	writePluggedCA(t, m.caDir, newCA, oldCA.Root, newCA.Root)
	deadline := time.Now().Add(10 * time.Second)
	for {
		bundle, _ := mtls.ParseCertificatesPEM(m.app.RootPEM())
		// Trusting only the new root proves the serving certificate was
		// reissued too.
		cert, err = fetch([]*x509.Certificate{newCA.Root})
		if len(bundle) == 2 && err == nil && cert.Leaf().CheckSignatureFrom(newCA.Root) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the rotation: bundle of %d roots, fetch error %v", len(bundle), err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// A broken version is ignored: the new CA keeps signing.
	writeFile(t, filepath.Join(m.caDir, ca.CAKeyFile), "not a key")
	time.Sleep(100 * time.Millisecond)
	if cert, err = fetch([]*x509.Certificate{newCA.Root}); err != nil || cert.Leaf().CheckSignatureFrom(newCA.Root) != nil {
		t.Fatalf("after a broken version: %v", err)
	}
}
