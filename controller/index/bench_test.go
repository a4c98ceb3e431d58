package index_test

import (
	"math/rand/v2"
	"runtime"
	"runtime/metrics"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/zmesh/zmesh/controller/index"
	"github.com/zmesh/zmesh/controller/index/indextest"
)

// BenchmarkBuild builds the reference snapshot (indextest.BenchmarkSpec:
// 10,000 pods, 100 namespaces, 1,000 services, 50 policies, waypoints and
// PeerAuthentications). Besides ns/op and B/op it reports peak-heap-B, the
// highest live heap sampled while building (inputs included), and
// output-B, the heap the Output keeps alive.
func BenchmarkBuild(b *testing.B) {
	in := indextest.Inputs(indextest.BenchmarkSpec())
	cfg := index.Config{AssumeCaptured: false}

	runtime.GC()
	base := heapBytes()
	peak := startPeakSampler()
	b.ReportAllocs()
	b.ResetTimer()
	var out *index.Output
	for b.Loop() {
		out = index.Build(cfg, in)
	}
	b.StopTimer()
	maxHeap := peak()
	if len(out.Workloads) != 10000 || len(out.Services) != 1000 {
		b.Fatalf("got %d workloads, %d services", len(out.Workloads), len(out.Services))
	}
	if len(out.Problems) != 0 {
		b.Fatalf("problems: %v", out.Problems)
	}
	runtime.GC()
	b.ReportMetric(float64(heapBytes()-base), "output-B")
	b.ReportMetric(float64(maxHeap), "peak-heap-B")
	runtime.KeepAlive(out)
	runtime.KeepAlive(in)
}

// heapBytes reads the bytes of live and not-yet-swept heap objects.
func heapBytes() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// startPeakSampler samples the heap every millisecond until the returned
// function is called, which reports the maximum seen.
func startPeakSampler() func() uint64 {
	var (
		mu      sync.Mutex
		highest uint64
		done    = make(chan struct{})
		wg      sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if h := heapBytes(); h > highest {
					mu.Lock()
					highest = h
					mu.Unlock()
				}
			}
		}
	}()
	return func() uint64 {
		close(done)
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return highest
	}
}

// BenchmarkBuilderPodChange rebuilds the reference snapshot after one pod's
// readiness changed (the pod replaced by an edited copy, as an informer
// does), with a Builder that built the previous snapshot.
func BenchmarkBuilderPodChange(b *testing.B) {
	in := indextest.Inputs(indextest.BenchmarkSpec())
	x := index.NewBuilder(index.Config{})
	x.Build(in)
	i := len(in.Pods) / 2
	target := in.Pods[i].Name
	r := rand.New(rand.NewPCG(1, 1))
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; b.Loop(); n++ {
		b.StopTimer()
		in = indextest.WithPod(in, i, func(p *corev1.Pod) { indextest.SetReady(p, n%2 == 1) })
		// A source lists its cache in no particular order.
		r.Shuffle(len(in.Pods), func(a, b int) { in.Pods[a], in.Pods[b] = in.Pods[b], in.Pods[a] })
		i = slices.IndexFunc(in.Pods, func(p *corev1.Pod) bool { return p.Name == target })
		b.StartTimer()
		out := x.Build(in)
		if len(out.Workloads) != 10000 {
			b.Fatalf("got %d workloads", len(out.Workloads))
		}
	}
}
