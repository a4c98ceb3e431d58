package l7

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

	"github.com/zmesh/zmesh/controller/index"
)

// testScheme knows every type index.Inputs holds.
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
const testConfigKind = "L7Config"

type testConfig struct {
	RootNamespace string `json:"rootNamespace"`
	DomainSuffix  string `json:"domainSuffix"`
}

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

// decodeInputs reads a test file: Kubernetes objects plus an optional
// L7Config document. strict refuses unknown fields (test files); the
// fuzzer decodes leniently.
func decodeInputs(s *runtime.Scheme, data []byte, strict bool) (Config, *index.Inputs, error) {
	var cfg Config
	in := &index.Inputs{}
	for i, doc := range splitYAMLDocuments(data) {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return cfg, nil, fmt.Errorf("document %d: %w", i, err)
		}
		if tm.Kind == "" {
			continue
		}
		if tm.Kind == testConfigKind {
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
		gv, err := schema.ParseGroupVersion(tm.APIVersion)
		if err != nil {
			return cfg, nil, fmt.Errorf("document %d: %w", i, err)
		}
		obj, err := s.New(gv.WithKind(tm.Kind))
		if err != nil {
			return cfg, nil, fmt.Errorf("document %d: %w", i, err)
		}
		unmarshal := func(b []byte, o interface{}) error { return yaml.Unmarshal(b, o) }
		if strict {
			unmarshal = func(b []byte, o interface{}) error { return yaml.UnmarshalStrict(b, o) }
		}
		if err := unmarshal(doc, obj); err != nil {
			return cfg, nil, fmt.Errorf("document %d (%s): %w", i, tm.Kind, err)
		}
		if !in.Add(obj) {
			return cfg, nil, fmt.Errorf("document %d: %T is not an input", i, obj)
		}
	}
	return cfg, in, nil
}
