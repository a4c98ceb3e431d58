package l7

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/zmesh/zmesh/controller/index"
	"github.com/zmesh/zmesh/controller/internal/manifesttest"
)

// testConfigKind is a pseudo-kind in test files setting the Config.
const testConfigKind = "L7Config"

type testConfig struct {
	RootNamespace string `json:"rootNamespace"`
	DomainSuffix  string `json:"domainSuffix"`
}

// decodeInputs reads a test file: Kubernetes objects plus an optional
// L7Config document. strict refuses unknown fields (test files); the
// fuzzer decodes leniently.
func decodeInputs(s *runtime.Scheme, data []byte, strict bool) (Config, *index.Inputs, error) {
	var cfg Config
	objs, cfgDoc, err := manifesttest.Decode(s, data, strict, testConfigKind)
	if err != nil {
		return cfg, nil, err
	}
	if cfgDoc != nil {
		var tc struct {
			metav1.TypeMeta `json:",inline"`
			testConfig      `json:",inline"`
		}
		if err := yaml.UnmarshalStrict(cfgDoc, &tc); err != nil {
			return cfg, nil, fmt.Errorf("%s: %w", testConfigKind, err)
		}
		cfg = Config(tc.testConfig)
	}
	in := &index.Inputs{}
	for i, obj := range objs {
		if !in.Add(obj) {
			return cfg, nil, fmt.Errorf("object %d: %T is not an input", i, obj)
		}
	}
	return cfg, in, nil
}
