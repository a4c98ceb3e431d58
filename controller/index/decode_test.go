package index

import (
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"

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
	var tc testConfig
	objs, err := manifesttest.Decode(s, data, true, testConfigKind, &tc)
	if err != nil {
		return Config{}, nil, err
	}
	cfg := Config(tc)
	in := &Inputs{}
	for _, o := range objs {
		if !in.Add(o) {
			return cfg, nil, fmt.Errorf("%T is not an index input", o)
		}
	}
	return cfg, in, nil
}
