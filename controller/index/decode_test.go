package index

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/zmesh/zmesh/controller/internal/manifesttest"
)

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

// decodeInputs reads a test file: Kubernetes objects plus an optional
// IndexConfig document.
func decodeInputs(s *runtime.Scheme, data []byte) (Config, *Inputs, error) {
	var cfg Config
	objs, cfgDoc, err := manifesttest.Decode(s, data, true, testConfigKind)
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
	in := &Inputs{}
	for _, o := range objs {
		if !in.Add(o) {
			return cfg, nil, fmt.Errorf("%T is not an index input", o)
		}
	}
	return cfg, in, nil
}
