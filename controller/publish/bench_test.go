package publish

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/zmesh/zmesh/controller/index/indextest"
)

// BenchmarkPublishPodChange publishes the reference snapshot (10,000 pods,
// 1,000 services, waypoints and policies) after one pod's readiness
// changed, with a Publisher that published the previous snapshot: index,
// allow-from-waypoint, L7 and the xDS server's diff, without clients.
func BenchmarkPublishPodChange(b *testing.B) {
	in := indextest.Inputs(indextest.BenchmarkSpec())
	p := newPublisher(b)
	if _, err := p.Publish(in); err != nil {
		b.Fatal(err)
	}
	i := len(in.Pods) / 2
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; b.Loop(); n++ {
		b.StopTimer()
		in = indextest.WithPod(in, i, func(p *corev1.Pod) { indextest.SetReady(p, n%2 == 1) })
		b.StartTimer()
		res, err := p.Publish(in)
		if err != nil {
			b.Fatal(err)
		}
		if len(res.Output.Workloads) != 10000 {
			b.Fatalf("got %d workloads", len(res.Output.Workloads))
		}
	}
}
