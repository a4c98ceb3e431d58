package nodeagent

import (
	"strings"
	"testing"
)

func TestParseManifest(t *testing.T) {
	tests := []struct {
		name       string
		in         string
		wantErr    string
		pods, nss  int
		firstPodNS string
	}{
		{"pods, namespaces and other kinds", `
# leading comment
apiVersion: v1
kind: Namespace
metadata: {name: demo, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec: {whatever: true}
---
# comments only
---
apiVersion: v1
kind: Pod
metadata: {name: p, uid: u1}
spec: {nodeName: n1, containers: [{name: app, image: x}]}
---
apiVersion: v1
kind: Service
metadata: {name: s}
`, "", 1, 1, "default"},
		{"json", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"x"}}`, "", 1, 0, "x"},
		{"empty file", ``, "", 0, 0, ""},
		{"missing kind", "apiVersion: v1\nmetadata: {name: p}\n", "apiVersion and kind", 0, 0, ""},
		{"bad YAML", "apiVersion: v1\nkind: Pod\nmetadata: {name: [\n", "document 1", 0, 0, ""},
		{"duplicate key", "apiVersion: v1\nkind: Pod\nkind: Pod\nmetadata: {name: p}\n", "invalid YAML", 0, 0, ""},
		{"unknown pod field", "apiVersion: v1\nkind: Pod\nmetadata: {name: p, lables: {a: b}}\n", "v1 Pod", 0, 0, ""},
		{"pod without name", "apiVersion: v1\nkind: Pod\nmetadata: {namespace: x}\n", "metadata.name", 0, 0, ""},
		{"namespace without name", "apiVersion: v1\nkind: Namespace\nmetadata: {}\n", "metadata.name", 0, 0, ""},
		{"bad document after a good one", "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nkind: [\n", "document 2", 0, 0, ""},
		{"scalar document", "just text\n", "not a Kubernetes object", 0, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := parseManifest([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(m.pods) != tt.pods || len(m.namespaces) != tt.nss {
				t.Fatalf("got %d pods, %d namespaces", len(m.pods), len(m.namespaces))
			}
			if tt.pods > 0 && m.pods[0].Namespace != tt.firstPodNS {
				t.Errorf("pod namespace %q", m.pods[0].Namespace)
			}
		})
	}
}

// FuzzParseManifest: manifests are written by hand; no input may panic,
// and every Pod and Namespace accepted has a name (and a Pod a namespace).
func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(podYAML("web", "demo", "u", "n1", "app: web")))
	f.Add([]byte(docs(nsYAML("demo", "istio.io/dataplane-mode: ambient"), "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n")))
	f.Add([]byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}}`))
	f.Add([]byte("---\n---\n# x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseManifest(data)
		if err != nil {
			return
		}
		for _, p := range m.pods {
			if p.Name == "" || p.Namespace == "" {
				t.Fatalf("pod without name or namespace: %+v", p.ObjectMeta)
			}
		}
		for _, ns := range m.namespaces {
			if ns.Name == "" {
				t.Fatal("namespace without name")
			}
		}
	})
}
