package configdir

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/zmesh/zmesh/controller/index"
)

const goodFile = `
apiVersion: v1
kind: Namespace
metadata:
  name: demo
  labels: {istio.io/dataplane-mode: ambient}
---
# a comment-only document is skipped
---
apiVersion: v1
kind: Pod
metadata: {name: sleep, namespace: demo}
spec:
  serviceAccountName: sleep
  containers: [{name: app, image: sleep}]
status: {podIP: 10.244.1.5}
---
apiVersion: v1
kind: Service
metadata: {name: httpbin, namespace: demo}
spec:
  selector: {app: httpbin}
  ports: [{port: 80}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-sleep, namespace: demo}
spec:
  action: ALLOW
  rules: [{from: [{source: {principals: ["cluster.local/ns/demo/sa/sleep"]}}]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ignored}
`

// counts summarises Inputs for comparisons.
func counts(in *index.Inputs) map[string]int {
	return map[string]int{
		"Namespace": len(in.Namespaces), "Pod": len(in.Pods), "Service": len(in.Services),
		"AuthorizationPolicy": len(in.AuthorizationPolicies), "PeerAuthentication": len(in.PeerAuthentications),
		"VirtualService": len(in.VirtualServices),
	}
}

func TestLoadFiles(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		want    map[string]int
		problem string // substring of the one expected problem, "" for none
	}{
		{
			name:  "multi-document file, unsupported kind skipped",
			files: map[string]string{"a.yaml": goodFile},
			want:  map[string]int{"Namespace": 1, "Pod": 1, "Service": 1, "AuthorizationPolicy": 1},
		},
		{
			name:    "malformed YAML",
			files:   map[string]string{"a.yaml": goodFile, "b.yaml": "apiVersion: v1\nkind: Pod\nmetadata: {name: [x\n"},
			want:    map[string]int{"Namespace": 1, "Pod": 1, "Service": 1, "AuthorizationPolicy": 1},
			problem: "b.yaml: document 1: invalid YAML",
		},
		{
			name:    "unknown field in a core object",
			files:   map[string]string{"b.yaml": "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {nodeNmae: n1}\n"},
			want:    map[string]int{},
			problem: `unknown field "spec.nodeNmae"`,
		},
		{
			name:    "typo in an Istio spec",
			files:   map[string]string{"b.yaml": "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p}\nspec: {actoin: DENY}\n"},
			want:    map[string]int{},
			problem: `unknown field "actoin"`,
		},
		{
			name:    "bad enum in an Istio spec",
			files:   map[string]string{"b.yaml": "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p}\nspec: {mtls: {mode: STRIKT}}\n"},
			want:    map[string]int{},
			problem: "STRIKT",
		},
		{
			name: "Go-style durations in an Istio spec, as Istio reads them",
			files: map[string]string{"b.yaml": "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v}\n" +
				"spec: {hosts: [r], http: [{timeout: 500ms, retries: {attempts: 2, perTryTimeout: 1m30s}, route: [{destination: {host: r}}]}]}\n"},
			want: map[string]int{"VirtualService": 1},
		},
		{
			name: "bad duration in an Istio spec",
			files: map[string]string{"b.yaml": "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v}\n" +
				"spec: {hosts: [r], http: [{timeout: 5 parsecs, route: [{destination: {host: r}}]}]}\n"},
			want:    map[string]int{},
			problem: "bad Duration",
		},
		{
			name:    "missing kind",
			files:   map[string]string{"b.yaml": "apiVersion: v1\nmetadata: {name: p}\n"},
			want:    map[string]int{},
			problem: "apiVersion and kind are required",
		},
		{
			name: "one bad document rejects its whole file",
			files: map[string]string{"b.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: ok}\n---\n" +
				"apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: notanumber}]}\n"},
			want:    map[string]int{},
			problem: "b.yaml: document 2",
		},
		{
			name: "duplicate declaration keeps the first file's",
			files: map[string]string{"a.yaml": goodFile,
				"b.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n"},
			want:    map[string]int{"Namespace": 1, "Pod": 1, "Service": 1, "AuthorizationPolicy": 1},
			problem: "Namespace /demo already declared in a.yaml",
		},
		{
			name: "validation failure",
			files: map[string]string{"b.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n---\n" +
				"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: invalid}\nspec: {action: DENY}\n"},
			// The file is rejected, but the new invalid policy is delivered
			// for the index to enforce fail-closed.
			want:    map[string]int{"AuthorizationPolicy": 1},
			problem: "AuthorizationPolicy default/invalid: rejected by test; enforced fail-closed meanwhile: AuthorizationPolicy default/invalid",
		},
		{
			name:  "hidden files and other extensions are ignored",
			files: map[string]string{".a.yaml.swp": "garbage: [", "notes.txt": "garbage: [", "sub/a.yml": goodFile},
			want:  map[string]int{"Namespace": 1, "Pod": 1, "Service": 1, "AuthorizationPolicy": 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, body := range tt.files {
				writeFile(t, filepath.Join(dir, name), body)
			}
			got := make(chan *index.Inputs, 10)
			s := newSource(t, dir, got)
			in := <-got
			for kind, n := range counts(in) {
				if n != tt.want[kind] {
					t.Errorf("%s: got %d, want %d", kind, n, tt.want[kind])
				}
			}
			for _, vs := range in.VirtualServices {
				for _, h := range vs.Spec.Http {
					if d := h.GetTimeout().AsDuration(); d != 500*time.Millisecond {
						t.Errorf("timeout %v, want 500ms", d)
					}
				}
			}
			probs := s.Problems()
			switch {
			case tt.problem == "" && len(probs) > 0:
				t.Errorf("unexpected problems: %v", probs)
			case tt.problem != "" && (len(probs) != 1 || !strings.Contains(probs[0].String(), tt.problem)):
				t.Errorf("problems %v, want one containing %q", probs, tt.problem)
			}
		})
	}
}

func TestDefaultsNamespace(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.yaml"), goodFile)
	got := make(chan *index.Inputs, 10)
	newSource(t, dir, got)
	in := <-got
	if ns := in.AuthorizationPolicies[0].Namespace; ns != "demo" {
		t.Errorf("namespace %q", ns)
	}
	if ns := in.Namespaces[0].Namespace; ns != "" {
		t.Errorf("Namespace got namespace %q", ns)
	}
}

// TestInvalidPolicyEdit: an edit that makes a policy invalid keeps the
// last good version in effect (no stand-in), while a new invalid policy in
// the same rejected file is delivered for the index to enforce
// fail-closed.
func TestInvalidPolicyEdit(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "p.yaml")
	policy := func(name, labels string) string {
		return "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: " + name + ", namespace: demo, labels: {" + labels + "}}\n" +
			"spec: {action: ALLOW, rules: [{from: [{source: {principals: [cluster.local/ns/demo/sa/a]}}]}]}\n"
	}
	writeFile(t, f, policy("p", ""))
	got := make(chan *index.Inputs, 10)
	s := newSource(t, dir, got)
	<-got

	writeFile(t, f, policy("p", "invalid: 'true'"))
	waitFor(t, func() bool { return len(s.Problems()) == 1 })
	if r := s.Problems()[0].Reason; strings.Contains(r, "fail-closed") {
		t.Errorf("an edited policy with a last good version is not a stand-in: %s", r)
	}
	select {
	case in := <-got:
		t.Fatalf("a rejected edit delivered a snapshot: %v", counts(in))
	case <-time.After(200 * time.Millisecond):
	}

	writeFile(t, f, policy("p", "invalid: 'true'")+"---\n"+policy("q", "invalid: 'true'"))
	in := next(t, got)
	var names []string
	for _, ap := range in.AuthorizationPolicies {
		names = append(names, ap.Name+"/"+ap.Labels["invalid"])
	}
	if strings.Join(names, ",") != "p/,q/true" {
		t.Errorf("policies %v, want the last good p and the new invalid q", names)
	}
}

// TestReload edits, breaks, mends and removes files while the source runs.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.yaml")
	writeFile(t, a, goodFile)
	got := make(chan *index.Inputs, 10)
	s := newSource(t, dir, got)
	<-got

	// A new policy file arrives.
	b := filepath.Join(dir, "nested", "b.yaml")
	writeFile(t, b, "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: strict, namespace: demo}\nspec: {mtls: {mode: STRICT}}\n")
	in := next(t, got)
	if counts(in)["PeerAuthentication"] != 1 {
		t.Fatalf("new file not picked up: %v", counts(in))
	}

	// Breaking it keeps its last good contents and reports the file.
	writeFile(t, b, "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: strict, namespace: demo}\nspec: {mtls: {mode: STRIKT}}\n")
	waitFor(t, func() bool { return len(s.Problems()) == 1 })
	if p := s.Problems()[0]; p.File != filepath.Join("nested", "b.yaml") {
		t.Errorf("problem names %q", p.File)
	}
	select {
	case in := <-got:
		t.Fatalf("a rejected edit delivered a snapshot: %v", counts(in))
	case <-time.After(200 * time.Millisecond):
	}

	// Mending it clears the problem.
	writeFile(t, b, "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: strict, namespace: demo}\nspec: {mtls: {mode: PERMISSIVE}}\n")
	in = next(t, got)
	if m := in.PeerAuthentications[0].Spec.GetMtls().GetMode().String(); m != "PERMISSIVE" {
		t.Errorf("mode %s", m)
	}
	if p := s.Problems(); len(p) != 0 {
		t.Errorf("problems remain: %v", p)
	}

	// Removing a file removes its objects.
	if err := os.Remove(a); err != nil {
		t.Fatal(err)
	}
	in = next(t, got)
	if c := counts(in); c["Pod"] != 0 || c["PeerAuthentication"] != 1 {
		t.Errorf("after removal: %v", c)
	}
}

func TestStartErrors(t *testing.T) {
	if _, err := New(Options{OnChange: func(*index.Inputs) {}}); err == nil {
		t.Error("no dir accepted")
	}
	s, err := New(Options{Dir: filepath.Join(t.TempDir(), "missing"), OnChange: func(*index.Inputs) {}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err == nil {
		t.Error("missing dir accepted")
	}
}

func newSource(t *testing.T, dir string, got chan *index.Inputs) *Source {
	t.Helper()
	s, err := New(Options{
		Dir:      dir,
		OnChange: func(in *index.Inputs) { got <- in },
		Validate: func(obj runtime.Object) error {
			if ap, ok := obj.(*securityv1.AuthorizationPolicy); ok && (ap.Name == "invalid" || ap.Labels["invalid"] == "true") {
				return errors.New("rejected by test")
			}
			return nil
		},
		Debounce: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// writeFile replaces path atomically, as editors and config management do.
func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func next(t *testing.T, got chan *index.Inputs) *index.Inputs {
	t.Helper()
	select {
	case in := <-got:
		return in
	case <-time.After(5 * time.Second):
		t.Fatal("no snapshot delivered")
		return nil
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
