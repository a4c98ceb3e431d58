package l7

import (
	"testing"

	"github.com/zmesh/zmesh/controller/index/indextest"
)

// BenchmarkBuild measures a rebuild at the controller's reference size
// (10,000 pods, 1,000 services, 4 waypoints binding their namespaces).
func BenchmarkBuild(b *testing.B) {
	in := indextest.Inputs(indextest.BenchmarkSpec())
	out := Build(Config{}, in)
	if len(out.Listeners) == 0 {
		b.Fatal("no listeners at the reference size")
	}
	for b.Loop() {
		Build(Config{}, in)
	}
	b.ReportMetric(float64(len(out.Listeners)), "listeners")
	b.ReportMetric(float64(len(out.Clusters)), "clusters")
}
