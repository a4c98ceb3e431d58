package l7

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/zmesh/zmesh/controller/index"
	"github.com/zmesh/zmesh/controller/internal/manifesttest"
)

// encodeOutput is the deterministic wire form of every resource plus the
// problems, for byte comparisons.
func encodeOutput(t *testing.T, out *Output) []byte {
	t.Helper()
	var buf bytes.Buffer
	opts := proto.MarshalOptions{Deterministic: true}
	for _, l := range out.Listeners {
		b, err := opts.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		buf.WriteString(l.Name + "\n")
		buf.Write(b)
	}
	for _, c := range out.Clusters {
		b, err := opts.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		buf.WriteString(c.Name + "\n")
		buf.Write(b)
	}
	for _, p := range out.Problems {
		buf.WriteString(p.String() + "\n")
	}
	return buf.Bytes()
}

func shuffle[T any](r *rand.Rand, s []T) []T {
	c := append([]T(nil), s...)
	r.Shuffle(len(c), func(i, j int) { c[i], c[j] = c[j], c[i] })
	return c
}

// shuffled copies in with every slice in a random order.
func shuffled(r *rand.Rand, in *index.Inputs) *index.Inputs {
	return &index.Inputs{
		Namespaces:             shuffle(r, in.Namespaces),
		Pods:                   shuffle(r, in.Pods),
		Services:               shuffle(r, in.Services),
		EndpointSlices:         shuffle(r, in.EndpointSlices),
		AuthorizationPolicies:  shuffle(r, in.AuthorizationPolicies),
		PeerAuthentications:    shuffle(r, in.PeerAuthentications),
		Gateways:               shuffle(r, in.Gateways),
		ServiceEntries:         shuffle(r, in.ServiceEntries),
		WorkloadEntries:        shuffle(r, in.WorkloadEntries),
		HTTPRoutes:             shuffle(r, in.HTTPRoutes),
		GRPCRoutes:             shuffle(r, in.GRPCRoutes),
		TCPRoutes:              shuffle(r, in.TCPRoutes),
		VirtualServices:        shuffle(r, in.VirtualServices),
		DestinationRules:       shuffle(r, in.DestinationRules),
		RequestAuthentications: shuffle(r, in.RequestAuthentications),
		Telemetries:            shuffle(r, in.Telemetries),
	}
}

// inputsJSON renders the inputs, to check that Build leaves them alone
// (DeepCopy of Istio objects does not compare equal with reflection).
func inputsJSON(t *testing.T, in *index.Inputs) []byte {
	t.Helper()
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDeterministic builds every test case with its inputs shuffled and
// requires byte-identical resources, and inputs left unmodified.
func TestDeterministic(t *testing.T) {
	paths, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := manifesttest.Scheme()
	r := rand.New(rand.NewPCG(1, 2))
	for _, path := range paths {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".yaml"), func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			cfg, in, err := decodeInputs(s, data, true)
			if err != nil {
				t.Fatal(err)
			}
			orig := inputsJSON(t, in)
			want := encodeOutput(t, Build(cfg, in))
			if !bytes.Equal(orig, inputsJSON(t, in)) {
				t.Fatal("Build modified its inputs")
			}
			for i := 0; i < 20; i++ {
				got := encodeOutput(t, Build(cfg, shuffled(r, in)))
				if !bytes.Equal(got, want) {
					t.Fatalf("shuffle %d: output differs", i)
				}
			}
		})
	}
}
