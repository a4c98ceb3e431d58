package l7

import (
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"

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
	var tc testConfig
	objs, err := manifesttest.Decode(s, data, strict, testConfigKind, &tc)
	if err != nil {
		return Config{}, nil, err
	}
	cfg := Config(tc)
	in := &index.Inputs{}
	for i, obj := range objs {
		if !in.Add(obj) {
			return cfg, nil, fmt.Errorf("object %d: %T is not an input", i, obj)
		}
	}
	return cfg, in, nil
}
