// Package manifesttest reads the multi-document YAML test files of the
// controller's translation packages (index, l7) into typed Kubernetes
// objects, and diffs their golden outputs. It is for tests only.
package manifesttest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"
)

// Scheme knows every type index.Inputs holds.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, discoveryv1.AddToScheme,
		securityv1.AddToScheme, networkingv1.AddToScheme, telemetryv1.AddToScheme, gatewayv1.Install,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}

// Documents splits a multi-document YAML stream on "---" lines, dropping
// empty documents.
func Documents(data []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	flush := func() {
		if len(bytes.TrimSpace(cur.Bytes())) > 0 {
			docs = append(docs, append([]byte(nil), cur.Bytes()...))
		}
		cur.Reset()
	}
	for _, line := range strings.SplitAfter(string(data), "\n") {
		if strings.TrimRight(line, " \r\n") == "---" {
			flush()
			continue
		}
		cur.WriteString(line)
	}
	flush()
	return docs
}

// Decode decodes every document of data into the scheme's typed objects;
// documents with only comments are skipped. strict makes unknown fields
// errors. A document of kind configKind (a pseudo-kind setting the test's
// configuration) is decoded into config instead, always strictly, its
// apiVersion and kind aside (the last one wins).
func Decode(s *runtime.Scheme, data []byte, strict bool, configKind string, config any) (objs []runtime.Object, err error) {
	unmarshal := func(b []byte, o any) error { return yaml.Unmarshal(b, o) }
	if strict {
		unmarshal = func(b []byte, o any) error { return yaml.UnmarshalStrict(b, o) }
	}
	for i, doc := range Documents(data) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		switch tm.Kind {
		case "":
			continue
		case configKind:
			if err := decodeConfig(doc, config); err != nil {
				return nil, fmt.Errorf("document %d (%s): %w", i, configKind, err)
			}
			continue
		}
		gv, err := schema.ParseGroupVersion(tm.APIVersion)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		obj, err := s.New(gv.WithKind(tm.Kind))
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if err := unmarshal(doc, obj); err != nil {
			return nil, fmt.Errorf("document %d (%s): %w", i, tm.Kind, err)
		}
		objs = append(objs, obj)
	}
	return objs, nil
}

// decodeConfig decodes a config document into config, refusing unknown
// fields.
func decodeConfig(doc []byte, config any) error {
	var m map[string]any
	if err := yaml.Unmarshal(doc, &m); err != nil {
		return err
	}
	delete(m, "apiVersion")
	delete(m, "kind")
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(config)
}

// LineDiff is a small line-based diff for failure messages.
func LineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	i, j := 0, 0
	for i < len(w) || j < len(g) {
		switch {
		case i < len(w) && j < len(g) && w[i] == g[j]:
			i++
			j++
		case j < len(g) && !slices.Contains(w[i:], g[j]):
			b.WriteString("+ " + g[j] + "\n")
			j++
		case i < len(w):
			b.WriteString("- " + w[i] + "\n")
			i++
		default:
			b.WriteString("+ " + g[j] + "\n")
			j++
		}
	}
	return b.String()
}
