package index

import (
	"bytes"
	"fmt"
	"strings"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"
)

// testScheme knows every type Inputs holds.
func testScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, discoveryv1.AddToScheme,
		securityv1.AddToScheme, networkingv1.AddToScheme, gatewayv1.Install,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}

// testConfigKind is a pseudo-kind in test files setting the Config.
const testConfigKind = "IndexConfig"

// testConfig is the YAML form of Config in test files.
type testConfig struct {
	ClusterID      string `json:"clusterID"`
	TrustDomain    string `json:"trustDomain"`
	RootNamespace  string `json:"rootNamespace"`
	Network        string `json:"network"`
	DomainSuffix   string `json:"domainSuffix"`
	AssumeCaptured bool   `json:"assumeCaptured"`
}

// splitYAMLDocuments splits a multi-document YAML stream on "---" lines,
// dropping empty documents.
func splitYAMLDocuments(data []byte) [][]byte {
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

// decodeObjects decodes every document of a multi-document YAML stream into
// the scheme's typed objects. Unknown top-level fields are errors.
func decodeObjects(s *runtime.Scheme, data []byte) ([]runtime.Object, error) {
	var objs []runtime.Object
	for i, doc := range splitYAMLDocuments(data) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if tm.Kind == "" {
			// Only comments.
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
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			return nil, fmt.Errorf("document %d (%s): %w", i, tm.Kind, err)
		}
		objs = append(objs, obj)
	}
	return objs, nil
}

// decodeInputs reads a test file: Kubernetes objects plus an optional
// IndexConfig document.
func decodeInputs(s *runtime.Scheme, data []byte) (Config, *Inputs, error) {
	var cfg Config
	var rest [][]byte
	for _, doc := range splitYAMLDocuments(data) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err == nil && tm.Kind == testConfigKind {
			var tc struct {
				metav1.TypeMeta `json:",inline"`
				testConfig      `json:",inline"`
			}
			if err := yaml.UnmarshalStrict(doc, &tc); err != nil {
				return cfg, nil, fmt.Errorf("%s: %w", testConfigKind, err)
			}
			cfg = Config(tc.testConfig)
			continue
		}
		rest = append(rest, doc)
	}
	objs, err := decodeObjects(s, bytes.Join(rest, []byte("\n---\n")))
	if err != nil {
		return cfg, nil, err
	}
	in := &Inputs{}
	for _, o := range objs {
		if !in.Add(o) {
			return cfg, nil, fmt.Errorf("%T is not an index input", o)
		}
	}
	return cfg, in, nil
}
