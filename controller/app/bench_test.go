package app

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"

	"github.com/zmesh/zmesh/controller/auth"
	"github.com/zmesh/zmesh/controller/index"
	"github.com/zmesh/zmesh/controller/index/indextest"
	"github.com/zmesh/zmesh/controller/xdsserver"
	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/xds"
)

const benchClients = 100

// BenchmarkPodChangeEndToEnd measures the controller's whole publish path
// for one pod becoming unready (or ready again) in a 10,000-pod, 1,000-service
// mesh: index rebuild, xDS diff and debounce, and delivery until all 100
// subscribed clients have applied it. gRPC runs without TLS here so that the
// number is the controller's, not the handshake's.
func BenchmarkPodChangeEndToEnd(b *testing.B) {
	tokens, err := auth.NewStaticTokens([]auth.TokenEntry{{Token: "bench",
		Caller: auth.Caller{Identity: "spiffe://cluster.local/ns/istio-system/sa/ztunnel", Node: "node1"}}})
	if err != nil {
		b.Fatal(err)
	}
	cfg, err := Config{ConfigDir: "unused", CADir: "unused", Index: index.Config{AssumeCaptured: true}}.withDefaults()
	if err != nil {
		b.Fatal(err)
	}
	srv, err := xdsserver.New(xdsserver.Options{Authenticator: tokens, Registry: prometheus.NewRegistry(),
		DebounceQuiet: cfg.DebounceQuiet, DebounceMax: cfg.DebounceMax})
	if err != nil {
		b.Fatal(err)
	}
	a := &App{cfg: cfg, log: slog.New(slog.DiscardHandler), xds: srv}
	if err := a.newPublisher(); err != nil {
		b.Fatal(err)
	}
	in := indextest.Inputs(indextest.BenchmarkSpec())
	pod := in.Pods[len(in.Pods)/2]
	target := "Kubernetes//Pod/" + pod.Namespace + "/" + pod.Name
	a.apply(in)

	g := grpc.NewServer()
	srv.Register(g)
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	defer func() { srv.Stop(); g.Stop() }()

	// Each client reports the target's status whenever it changes.
	applied := make(chan workloadapi.WorkloadStatus, benchClients*4)
	handler := xds.HandlerFunc(func(d xds.Delta) []xds.Rejection {
		for _, u := range d.Upserts {
			if u.Name == target {
				applied <- u.Message.(*workloadapi.Address).GetWorkload().GetStatus()
			}
		}
		return nil
	})
	for range benchClients {
		c, err := xds.New(xds.Config{
			Address:     lis.Addr().String(),
			DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
			Node:        xds.Node{IP: "172.30.0.11", PodName: "ztunnel", Namespace: "istio-system", NodeName: "node1"},
			Token:       func(context.Context) (string, error) { return "bench", nil },
			Types: []xds.TypeConfig{{TypeURL: workloadapi.AddressTypeURL,
				New: func() proto.Message { return &workloadapi.Address{} }, Handler: handler}},
		})
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Start(); err != nil {
			b.Fatal(err)
		}
		defer c.Stop()
		select {
		case <-c.Synced(workloadapi.AddressTypeURL):
		case <-time.After(time.Minute):
			b.Fatal("client never synced")
		}
	}
	for range benchClients {
		<-applied // the initial state
	}

	var total, build []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// The same snapshot with the pod replaced by a copy whose readiness
		// is flipped, as an informer replaces an updated object: the other
		// 9,999 pods are the same objects.
		ready, want := i%2 == 1, workloadapi.WorkloadStatus_UNHEALTHY
		if ready {
			want = workloadapi.WorkloadStatus_HEALTHY
		}
		in = indextest.WithPod(in, len(in.Pods)/2, func(p *corev1.Pod) { indextest.SetReady(p, ready) })

		start := time.Now()
		a.apply(in)
		build = append(build, time.Since(start))
		for seen := 0; seen < benchClients; {
			select {
			case st := <-applied:
				if st == want {
					seen++
				}
			case <-time.After(10 * time.Second):
				b.Fatalf("iteration %d: %d of %d clients applied the change", i, seen, benchClients)
			}
		}
		total = append(total, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(total)
	slices.Sort(build)
	b.ReportMetric(msOf(total[len(total)/2]), "p50-ms")
	b.ReportMetric(msOf(total[(len(total)-1)*99/100]), "p99-ms")
	b.ReportMetric(msOf(build[len(build)/2]), "rebuild+update-p50-ms")
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
