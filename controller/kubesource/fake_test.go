package kubesource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	securityapi "istio.io/api/security/v1beta1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	istiofake "istio.io/client-go/pkg/clientset/versioned/fake"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	discoveryfake "k8s.io/client-go/discovery/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	gatewayfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"

	"github.com/zmesh/zmesh/controller/index"
	"github.com/zmesh/zmesh/pkg/kube"
)

// resourceList lists resource names served under one group version.
func resourceList(gv string, names ...string) *metav1.APIResourceList {
	l := &metav1.APIResourceList{GroupVersion: gv}
	for _, n := range names {
		l.APIResources = append(l.APIResources, metav1.APIResource{Name: n})
	}
	return l
}

var (
	allIstioSecurity   = resourceList("security.istio.io/v1", "authorizationpolicies", "peerauthentications", "requestauthentications")
	allIstioNetworking = resourceList("networking.istio.io/v1", "serviceentries", "workloadentries", "virtualservices", "destinationrules")
	allGateway         = resourceList("gateway.networking.k8s.io/v1", "gateways", "httproutes", "grpcroutes", "tcproutes")
	allIstioTelemetry  = resourceList("telemetry.istio.io/v1", "telemetries")
)

func kindNames(ks []kind) map[string]bool {
	m := map[string]bool{}
	for _, k := range ks {
		m[k.name] = true
	}
	return m
}

func TestServedKinds(t *testing.T) {
	tests := []struct {
		name      string
		resources []*metav1.APIResourceList
		fail      error // returned by every discovery call
		missing   []string
		wantErr   bool
	}{
		{name: "everything served", resources: []*metav1.APIResourceList{allIstioSecurity, allIstioNetworking, allIstioTelemetry, allGateway}},
		{name: "no gateway API", resources: []*metav1.APIResourceList{allIstioSecurity, allIstioNetworking, allIstioTelemetry},
			missing: []string{"Gateway", "HTTPRoute", "GRPCRoute", "TCPRoute"}},
		{name: "gateway API without TCPRoute v1", resources: []*metav1.APIResourceList{allIstioSecurity, allIstioNetworking, allIstioTelemetry,
			resourceList("gateway.networking.k8s.io/v1", "gateways", "httproutes", "grpcroutes")},
			missing: []string{"TCPRoute"}},
		{name: "no telemetry API", resources: []*metav1.APIResourceList{allIstioSecurity, allIstioNetworking, allGateway},
			missing: []string{"Telemetry"}},
		{name: "nothing but built-ins",
			missing: []string{"AuthorizationPolicy", "PeerAuthentication", "RequestAuthentication", "ServiceEntry",
				"WorkloadEntry", "VirtualService", "DestinationRule", "Telemetry", "Gateway", "HTTPRoute", "GRPCRoute", "TCPRoute"}},
		{name: "discovery broken", fail: errors.New("connection refused"), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			disc := &discoveryfake.FakeDiscovery{Fake: &k8stesting.Fake{Resources: tt.resources}}
			if tt.fail != nil {
				disc.PrependReactor("*", "*", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, tt.fail })
			}
			served, missing, err := servedKinds(disc, kinds)
			if tt.wantErr {
				if err == nil {
					t.Fatal("want an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(served)+len(missing) != len(kinds) {
				t.Fatalf("served %d + missing %d != %d kinds", len(served), len(missing), len(kinds))
			}
			got, want := kindNames(missing), map[string]bool{}
			for _, n := range tt.missing {
				want[n] = true
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("missing = %v, want %v", got, want)
			}
			for _, k := range served {
				if want[k.name] {
					t.Errorf("%s both served and missing", k.name)
				}
			}
		})
	}
}

// fakeClients has a fake API server serving only the built-in kinds plus
// the given group versions; objs are preloaded by kind.
func fakeClients(served []*metav1.APIResourceList, objs ...runtime.Object) *kube.Clients {
	var kubeObjs, istioObjs []runtime.Object
	for _, o := range objs {
		switch o.(type) {
		case *securityv1.AuthorizationPolicy:
			istioObjs = append(istioObjs, o)
		default:
			kubeObjs = append(kubeObjs, o)
		}
	}
	k := kubefake.NewClientset(kubeObjs...)
	k.Resources = served
	return &kube.Clients{Kube: k, Istio: istiofake.NewSimpleClientset(istioObjs...), Gateway: gatewayfake.NewClientset()}
}

var quiet = slog.New(slog.DiscardHandler)

// recorder keeps every snapshot delivered.
type recorder struct {
	mu    sync.Mutex
	snaps []*index.Inputs
}

func (r *recorder) onChange(in *index.Inputs) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.snaps = append(r.snaps, in)
}

func (r *recorder) last() (*index.Inputs, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.snaps) == 0 {
		return nil, 0
	}
	return r.snaps[len(r.snaps)-1], len(r.snaps)
}

func pod(ns, name string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: "1"},
		Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:1"}}},
		Status: corev1.PodStatus{PodIP: "10.244.0.9"}}
}

// TestStartSkipsUnservedKinds checks that kinds whose CRDs are not served
// neither block Start nor appear in snapshots, while the others do.
func TestStartSkipsUnservedKinds(t *testing.T) {
	ap := &securityv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "deny"},
		Spec: securityapi.AuthorizationPolicy{Action: securityapi.AuthorizationPolicy_DENY}}
	tests := []struct {
		name    string
		served  []*metav1.APIResourceList
		wantAPs int
	}{
		{name: "no CRDs", served: nil, wantAPs: 0},
		{name: "only Istio security", served: []*metav1.APIResourceList{allIstioSecurity}, wantAPs: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rec recorder
			src, err := New(Options{Clients: fakeClients(tt.served, pod("ns", "a"), ap), OnChange: rec.onChange, Validate: index.Validate, Logger: quiet})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := src.Start(ctx); err != nil {
				t.Fatal(err)
			}
			defer src.Stop()
			in, n := rec.last()
			if n != 1 {
				t.Fatalf("%d snapshots delivered by Start, want 1", n)
			}
			if len(in.Pods) != 1 || in.Pods[0].Name != "a" {
				t.Fatalf("pods = %v, want [a]", in.Pods)
			}
			if len(in.AuthorizationPolicies) != tt.wantAPs {
				t.Fatalf("%d authorization policies, want %d", len(in.AuthorizationPolicies), tt.wantAPs)
			}
			if p, ok := src.Pod("ns", "a"); !ok || p.Status.PodIP != "10.244.0.9" {
				t.Fatalf("Pod(ns, a) = %v, %v", p, ok)
			}
			if _, ok := src.Pod("ns", "nope"); ok {
				t.Fatal("Pod(ns, nope) found")
			}
		})
	}
}

// TestCoalescing drives events through a fake API server and counts
// snapshots.
func TestCoalescing(t *testing.T) {
	tests := []struct {
		name               string
		debounce, maxDelay time.Duration
		events             int
		gap                time.Duration // between events
		minSnaps, maxSnaps int           // after the first; maxSnaps < 0: bounded by the burst's length
	}{
		// A burst is one snapshot per quiet period at most, however many
		// events it has (creating in the fake is slow under -race).
		{name: "burst", debounce: 200 * time.Millisecond, maxDelay: time.Minute, events: 40, minSnaps: 1, maxSnaps: -1},
		// Steady events closer than the quiet period still get snapshots
		// every MaxDelay: 600ms of events every 10ms with a 100ms cap.
		{name: "max delay", debounce: 50 * time.Millisecond, maxDelay: 100 * time.Millisecond, events: 60,
			gap: 10 * time.Millisecond, minSnaps: 3, maxSnaps: 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rec recorder
			c := fakeClients(nil)
			src, err := New(Options{Clients: c, OnChange: rec.onChange, Debounce: tt.debounce, MaxDelay: tt.maxDelay, Logger: quiet})
			if err != nil {
				t.Fatal(err)
			}
			if err := src.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			defer src.Stop()
			began := time.Now()
			for i := range tt.events {
				if _, err := c.Kube.CoreV1().Pods("ns").Create(context.Background(), pod("ns", fmt.Sprint("p", i)), metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
				time.Sleep(tt.gap)
			}
			if tt.maxSnaps < 0 {
				tt.maxSnaps = 1 + int(time.Since(began)/tt.debounce)
			}
			deadline := time.Now().Add(5 * time.Second)
			for {
				in, n := rec.last()
				if len(in.Pods) == tt.events {
					if n-1 < tt.minSnaps || n-1 > tt.maxSnaps {
						t.Fatalf("%d snapshots after the first, want %d..%d", n-1, tt.minSnaps, tt.maxSnaps)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("last snapshot has %d pods, want %d", len(in.Pods), tt.events)
				}
				time.Sleep(10 * time.Millisecond)
			}
			// Nothing more arrives once the events stop.
			_, n := rec.last()
			time.Sleep(3 * tt.debounce)
			if _, n2 := rec.last(); n2 != n {
				t.Fatalf("%d more snapshots without events", n2-n)
			}
		})
	}
}

func TestNewValidates(t *testing.T) {
	c := fakeClients(nil)
	on := func(*index.Inputs) {}
	tests := []struct {
		name string
		opts Options
	}{
		{"no clients", Options{OnChange: on}},
		{"no istio clients", Options{Clients: &kube.Clients{Kube: c.Kube, Gateway: c.Gateway}, OnChange: on}},
		{"no OnChange", Options{Clients: c}},
		{"negative debounce", Options{Clients: c, OnChange: on, Debounce: -1}},
		{"max below quiet", Options{Clients: c, OnChange: on, Debounce: time.Second, MaxDelay: time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.opts); err == nil {
				t.Fatal("want an error")
			}
		})
	}
	if _, err := New(Options{Clients: c, OnChange: on}); err != nil {
		t.Fatalf("valid options: %v", err)
	}
}

func TestStartTwiceAndStopIdempotent(t *testing.T) {
	src, err := New(Options{Clients: fakeClients(nil), OnChange: func(*index.Inputs) {}})
	if err != nil {
		t.Fatal(err)
	}
	src.Stop() // before Start: harmless
	if err := src.Start(context.Background()); err == nil {
		t.Fatal("Start after Stop succeeded")
	}
	src2, _ := New(Options{Clients: fakeClients(nil), OnChange: func(*index.Inputs) {}})
	if err := src2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := src2.Start(context.Background()); err == nil {
		t.Fatal("second Start succeeded")
	}
	src2.Stop()
	src2.Stop()
	if _, ok := src2.Pod("ns", "a"); ok {
		t.Fatal("Pod answers after Stop")
	}
}
