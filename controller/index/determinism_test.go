package index

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/zmesh/zmesh/controller/internal/manifesttest"
)

// marshalOutput returns the deterministic wire form of every resource, by key.
func marshalOutput(t *testing.T, out *Output) map[string][]byte {
	t.Helper()
	opts := proto.MarshalOptions{Deterministic: true}
	res := map[string][]byte{}
	add := func(prefix, key string, m proto.Message) {
		b, err := opts.Marshal(m)
		if err != nil {
			t.Fatalf("marshal %s: %v", key, err)
		}
		res[prefix+key] = b
	}
	for k, w := range out.Workloads {
		add("workload:", k, w)
	}
	for k, s := range out.Services {
		add("service:", k, s)
	}
	for k, p := range out.Policies {
		add("policy:", k, p)
	}
	return res
}

func shuffleInputs(r *rand.Rand, in *Inputs) *Inputs {
	c := &Inputs{
		Namespaces:            slices.Clone(in.Namespaces),
		Pods:                  slices.Clone(in.Pods),
		Services:              slices.Clone(in.Services),
		EndpointSlices:        slices.Clone(in.EndpointSlices),
		AuthorizationPolicies: slices.Clone(in.AuthorizationPolicies),
		PeerAuthentications:   slices.Clone(in.PeerAuthentications),
		Gateways:              slices.Clone(in.Gateways),
		ServiceEntries:        slices.Clone(in.ServiceEntries),
		WorkloadEntries:       slices.Clone(in.WorkloadEntries),
	}
	shuffle := func(n int, swap func(i, j int)) { r.Shuffle(n, swap) }
	shuffle(len(c.Namespaces), func(i, j int) { c.Namespaces[i], c.Namespaces[j] = c.Namespaces[j], c.Namespaces[i] })
	shuffle(len(c.Pods), func(i, j int) { c.Pods[i], c.Pods[j] = c.Pods[j], c.Pods[i] })
	shuffle(len(c.Services), func(i, j int) { c.Services[i], c.Services[j] = c.Services[j], c.Services[i] })
	shuffle(len(c.EndpointSlices), func(i, j int) {
		c.EndpointSlices[i], c.EndpointSlices[j] = c.EndpointSlices[j], c.EndpointSlices[i]
	})
	shuffle(len(c.AuthorizationPolicies), func(i, j int) {
		c.AuthorizationPolicies[i], c.AuthorizationPolicies[j] = c.AuthorizationPolicies[j], c.AuthorizationPolicies[i]
	})
	shuffle(len(c.PeerAuthentications), func(i, j int) {
		c.PeerAuthentications[i], c.PeerAuthentications[j] = c.PeerAuthentications[j], c.PeerAuthentications[i]
	})
	shuffle(len(c.Gateways), func(i, j int) { c.Gateways[i], c.Gateways[j] = c.Gateways[j], c.Gateways[i] })
	shuffle(len(c.ServiceEntries), func(i, j int) {
		c.ServiceEntries[i], c.ServiceEntries[j] = c.ServiceEntries[j], c.ServiceEntries[i]
	})
	shuffle(len(c.WorkloadEntries), func(i, j int) {
		c.WorkloadEntries[i], c.WorkloadEntries[j] = c.WorkloadEntries[j], c.WorkloadEntries[i]
	})
	return c
}

// TestDeterministic builds every golden input several times, with the
// input slices shuffled, and requires byte-identical resources and equal
// Problems; it also checks that Build leaves its Inputs untouched.
func TestDeterministic(t *testing.T) {
	forEachInput(t, func(t *testing.T, cfg Config, in *Inputs) {
		before, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		first := Build(cfg, in)
		want := marshalOutput(t, first)
		r := rand.New(rand.NewPCG(1, 2))
		for i := 0; i < 5; i++ {
			out := Build(cfg, shuffleInputs(r, in))
			got := marshalOutput(t, out)
			if len(got) != len(want) {
				t.Fatalf("run %d: %d resources, want %d", i, len(got), len(want))
			}
			for k, b := range want {
				if !bytes.Equal(got[k], b) {
					t.Errorf("run %d: resource %s differs", i, k)
				}
			}
			if !slices.Equal(out.Problems, first.Problems) {
				t.Errorf("run %d: problems differ:\n%v\n%v", i, out.Problems, first.Problems)
			}
		}
		after, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(before, after) {
			t.Error("Build modified its Inputs")
		}
	})
}

// forEachInput runs f as a subtest for every test input in testdata (the
// golden files' inputs).
func forEachInput(t *testing.T, f func(t *testing.T, cfg Config, in *Inputs)) {
	paths, _ := filepath.Glob("testdata/*.yaml")
	s := manifesttest.Scheme()
	for _, path := range paths {
		if strings.HasSuffix(path, ".golden.yaml") {
			continue
		}
		t.Run(filepath.Base(path), func(t *testing.T) {
			cfg, in, err := decodeInputs(s, mustRead(t, path))
			if err != nil {
				t.Fatal(err)
			}
			f(t, cfg, in)
		})
	}
}
