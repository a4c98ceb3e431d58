package indextest_test

import (
	"testing"

	"github.com/zmesh/zmesh/controller/index"
	"github.com/zmesh/zmesh/controller/index/indextest"
)

func TestBenchmarkSpecInputs(t *testing.T) {
	in := indextest.Inputs(indextest.BenchmarkSpec())
	if len(in.Pods) != 10000 || len(in.Namespaces) != 100 || len(in.Services) != 1000 ||
		len(in.AuthorizationPolicies) != 50 || len(in.Gateways) != 4 || len(in.PeerAuthentications) == 0 {
		t.Fatalf("unexpected sizes: %d pods, %d namespaces, %d services, %d policies, %d gateways, %d peer authentications",
			len(in.Pods), len(in.Namespaces), len(in.Services), len(in.AuthorizationPolicies), len(in.Gateways), len(in.PeerAuthentications))
	}
	out := index.Build(index.Config{}, in)
	if len(out.Problems) > 0 {
		t.Fatalf("problems: %v", out.Problems)
	}
	if len(out.Workloads) != 10000 || len(out.Services) != 1000 {
		t.Fatalf("got %d workloads, %d services", len(out.Workloads), len(out.Services))
	}
	members := map[string]int{}
	for _, w := range out.Workloads {
		for svc := range w.Services {
			members[svc]++
		}
	}
	for svc := range out.Services {
		if members[svc] != 10 {
			t.Errorf("service %s has %d member workloads, want 10", svc, members[svc])
		}
	}
}

func TestInputsSmallAndEmpty(t *testing.T) {
	if in := indextest.Inputs(indextest.Spec{}); len(in.Pods) != 0 {
		t.Fatalf("empty spec gave %d pods", len(in.Pods))
	}
	in := indextest.Inputs(indextest.Spec{Namespaces: 3, Pods: 10, Services: 4, PodsPerService: 2, AuthorizationPolicies: 3, Waypoints: 1})
	if len(in.Pods) != 10 || len(in.Services) != 4 {
		t.Fatalf("got %d pods, %d services", len(in.Pods), len(in.Services))
	}
	if out := index.Build(index.Config{}, in); len(out.Problems) > 0 {
		t.Fatalf("problems: %v", out.Problems)
	}
}
