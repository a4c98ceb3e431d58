package kubesource_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"

	"github.com/zmesh/zmesh/controller/auth"
	"github.com/zmesh/zmesh/controller/index"
	"github.com/zmesh/zmesh/controller/index/indextest"
	"github.com/zmesh/zmesh/controller/kubesource"
	"github.com/zmesh/zmesh/controller/publish"
	"github.com/zmesh/zmesh/controller/xdsserver"
	"github.com/zmesh/zmesh/pkg/kube"
	"github.com/zmesh/zmesh/pkg/kube/kubetest"
	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/xds"
)

// Scale of issue 4's benchmark: 10,000 pods and 1,000 services.
const (
	benchNamespaces   = 100
	benchPodsPerNS    = 100
	benchSvcsPerNS    = 10
	benchWorkers      = 16
	benchFlipTimeout  = 10 * time.Second
	benchBetweenFlips = 150 * time.Millisecond
)

// anyCaller lets every xDS stream in: the benchmark's client is local.
type anyCaller struct{}

func (anyCaller) Authenticate(context.Context) (auth.Caller, error) {
	return auth.Caller{Identity: "spiffe://cluster.local/ns/istio-system/sa/ztunnel"}, nil
}

// BenchmarkPodStatusToXDS measures, at 10,000 pods and 1,000 services in
// the API server, the time from a pod's readiness change (the UpdateStatus
// call) to an xDS client seeing the changed Workload, through kubesource →
// publish.Publisher (index, L7, xDS update) → xdsserver → pkg/xds, the
// controller's own publishing path. It reports p50/p99 and where the time
// goes, and the process's peak RSS over the pipeline's run. Run it with
// -benchtime=Nx (each iteration is one readiness flip).
func BenchmarkPodStatusToXDS(b *testing.B) {
	c := benchClients(b)
	ctx := context.Background()
	node := populate(b, c)
	target := node.target

	// Baseline RSS: the test's own objects are garbage by now.
	runtime.GC()
	debug.FreeOSMemory()
	resetPeakRSS(b)
	baseRSS := procStatusKB(b, "VmRSS")

	p := newPipeline(b, c, target)
	p.watchTarget(b, c, target)
	p.waitFor(b, target.Namespace, target.Name, workloadapi.WorkloadStatus_HEALTHY)
	b.Logf("pipeline synced in %v: %d pods, %d services in snapshot; first Build %v",
		p.startTook.Round(time.Millisecond), p.firstPods, p.firstServices, p.firstBuild.Round(time.Millisecond))

	pod := target
	var lat, srcLat, apiLat, debLat, pubLat, xdsLat []time.Duration
	ready := true
	for b.Loop() {
		ready = !ready
		want := workloadapi.WorkloadStatus_UNHEALTHY
		if ready {
			want = workloadapi.WorkloadStatus_HEALTHY
		}
		indextest.SetReady(pod, ready)
		p.expect(want)
		began := time.Now()
		updated, err := c.Kube.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		if err != nil {
			b.Fatalf("update status: %v", err)
		}
		pod = updated
		tr := p.await(b)
		watched := p.watchedAt(want)
		apiLat = append(apiLat, watched.Sub(began))
		debLat = append(debLat, tr.onChange.Sub(watched))
		lat = append(lat, tr.seen.Sub(began))
		srcLat = append(srcLat, tr.onChange.Sub(began))
		pubLat = append(pubLat, tr.published.Sub(tr.onChange))
		xdsLat = append(xdsLat, tr.seen.Sub(tr.published))
		b.StopTimer()
		time.Sleep(benchBetweenFlips) // let the EndpointSlice follow-up settle
		b.StartTimer()
	}
	b.StopTimer()
	peak := procStatusKB(b, "VmHWM")
	report := func(name string, ds []time.Duration, q float64) {
		b.ReportMetric(float64(percentile(ds, q).Microseconds())/1000, name)
	}
	report("p50-ms", lat, 0.50)
	report("p99-ms", lat, 0.99)
	report("max-ms", lat, 1)
	report("src-p50-ms", srcLat, 0.50)
	report("src-p99-ms", srcLat, 0.99)
	report("api-watch-p50-ms", apiLat, 0.50)
	report("api-watch-p99-ms", apiLat, 0.99)
	report("debounce+list-p50-ms", debLat, 0.50)
	report("debounce+list-p99-ms", debLat, 0.99)
	report("publish-p50-ms", pubLat, 0.50)
	report("publish-p99-ms", pubLat, 0.99)
	report("xds-p50-ms", xdsLat, 0.50)
	report("xds-p99-ms", xdsLat, 0.99)
	b.ReportMetric(float64(peak)/1024, "rss-peak-MB")
	b.ReportMetric(float64(peak-baseRSS)/1024, "rss-delta-MB")
	b.ReportMetric(float64(baseRSS)/1024, "rss-base-MB")
	b.ReportMetric(float64(p.snapshots()), "snapshots")
}

// benchClients talks to the test API server with room for the bulk writes.
func benchClients(b *testing.B) *kube.Clients {
	b.Helper()
	base := kubetest.Clients(b)
	cfg := rest.CopyConfig(base.Config)
	cfg.QPS, cfg.Burst = 2000, 4000
	c, err := kube.NewClients(cfg, "zmesh-bench")
	if err != nil {
		b.Fatal(err)
	}
	return c
}

type populated struct{ target *corev1.Pod }

// populate creates a Node, the namespaces, services and running pods, and
// removes them at the end (pods bound to a node need a forced delete: there
// is no kubelet).
func populate(b *testing.B, c *kube.Clients) populated {
	b.Helper()
	ctx := context.Background()
	began := time.Now()
	nodeObj, err := c.Kube.CoreV1().Nodes().Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "zmesh-bench-node-"},
	}, metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	nodeName := nodeObj.Name
	b.Cleanup(func() { _ = c.Kube.CoreV1().Nodes().Delete(context.Background(), nodeName, metav1.DeleteOptions{}) })
	keepNodeReady(b, c, nodeObj)

	namespaces := make([]string, benchNamespaces)
	for i := range namespaces {
		namespaces[i] = kubetest.Namespace(b, c, "zmesh-bench", map[string]string{"istio.io/dataplane-mode": "ambient"})
		ns := namespaces[i]
		b.Cleanup(func() { // runs before the namespace's own cleanup
			zero := int64(0)
			_ = c.Kube.CoreV1().Pods(ns).DeleteCollection(context.Background(),
				metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{})
		})
	}

	type job struct{ ns, podOrSvc int }
	var (
		jobs    = make(chan job)
		wg      sync.WaitGroup
		errMu   sync.Mutex
		firstEr error
		target  *corev1.Pod
	)
	fail := func(err error) {
		errMu.Lock()
		defer errMu.Unlock()
		if firstEr == nil {
			firstEr = err
		}
	}
	for range benchWorkers {
		wg.Go(func() {
			for j := range jobs {
				ns := namespaces[j.ns]
				if j.podOrSvc < 0 { // a service
					i := -j.podOrSvc - 1
					_, err := c.Kube.CoreV1().Services(ns).Create(ctx, &corev1.Service{
						ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("svc-%d", i)},
						Spec: corev1.ServiceSpec{Selector: map[string]string{"app": fmt.Sprintf("app-%d", i)},
							Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}},
					}, metav1.CreateOptions{})
					if err != nil {
						fail(fmt.Errorf("create service: %w", err))
					}
					continue
				}
				i := j.podOrSvc
				n := j.ns*benchPodsPerNS + i
				pod, err := c.Kube.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pod-%d", i),
						Labels: map[string]string{"app": fmt.Sprintf("app-%d", i%benchSvcsPerNS)}},
					Spec: corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{Name: "app", Image: "app:1",
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
				}, metav1.CreateOptions{})
				if err != nil {
					fail(fmt.Errorf("create pod: %w", err))
					continue
				}
				ip := fmt.Sprintf("10.244.%d.%d", n/250, n%250+1)
				pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}, HostIP: "172.30.0.2"}
				indextest.SetReady(pod, true)
				pod, err = c.Kube.CoreV1().Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
				if err != nil {
					fail(fmt.Errorf("update pod status: %w", err))
					continue
				}
				if n == 0 {
					errMu.Lock()
					target = pod
					errMu.Unlock()
				}
			}
		})
	}
	for ns := range benchNamespaces {
		for i := range benchSvcsPerNS {
			jobs <- job{ns: ns, podOrSvc: -i - 1}
		}
		for i := range benchPodsPerNS {
			jobs <- job{ns: ns, podOrSvc: i}
		}
	}
	close(jobs)
	wg.Wait()
	if firstEr != nil {
		b.Fatal(firstEr)
	}
	b.Logf("created %d pods and %d services in %d namespaces in %v", benchNamespaces*benchPodsPerNS,
		benchNamespaces*benchSvcsPerNS, benchNamespaces, time.Since(began).Round(time.Second))
	return populated{target: target}
}

// keepNodeReady plays the kubelet's heartbeat for node (status and node
// Lease) until the benchmark ends, so that kube-controller-manager neither
// marks its pods not ready nor evicts them.
func keepNodeReady(b *testing.B, c *kube.Clients, node *corev1.Node) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	beat := func() error {
		// kube-controller-manager edits the node too: start from its latest.
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			n, err := c.Kube.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			now := metav1.Now()
			n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue,
				Reason: "KubeletReady", LastHeartbeatTime: now, LastTransitionTime: n.CreationTimestamp}}
			_, err = c.Kube.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			return fmt.Errorf("node heartbeat: %w", err)
		}
		renew := metav1.NewMicroTime(time.Now())
		leases := c.Kube.CoordinationV1().Leases("kube-node-lease")
		l, err := leases.Get(ctx, node.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			dur := int32(40)
			_, err = leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: node.Name},
				Spec: coordinationv1.LeaseSpec{HolderIdentity: &node.Name, LeaseDurationSeconds: &dur, RenewTime: &renew}}, metav1.CreateOptions{})
			return err
		}
		if err != nil {
			return err
		}
		l.Spec.RenewTime = &renew
		_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
		return err
	}
	if err := beat(); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(5 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if err := beat(); err != nil && ctx.Err() == nil {
					b.Logf("node heartbeat: %v", err)
				}
			}
		}
	}()
	name := node.Name
	b.Cleanup(func() {
		cancel()
		<-done
		_ = c.Kube.CoordinationV1().Leases("kube-node-lease").Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

// trace is when one change passed each stage.
type trace struct {
	onChange, published, seen time.Time
}

// pipeline is kubesource → publish (the controller's index, L7 and xDS
// publishing) → xdsserver → pkg/xds client.
type pipeline struct {
	uid string

	mu    sync.Mutex
	want  workloadapi.WorkloadStatus
	armed bool // a flip is in flight
	// The target's status in the latest snapshot, and the stage times of
	// the snapshot that last changed it.
	lastStatus workloadapi.WorkloadStatus
	lastChange trace
	armedAt    time.Time // set and read by the benchmark's goroutine only
	// What the direct watch of the target saw last, and when.
	watchStatus workloadapi.WorkloadStatus
	watched     time.Time
	done        chan trace
	nSnaps      int
	status      map[string]workloadapi.WorkloadStatus // by uid, as the client sees it
	statusC     chan struct{}

	startTook, firstBuild    time.Duration
	firstPods, firstServices int
}

func newPipeline(b *testing.B, c *kube.Clients, target *corev1.Pod) *pipeline {
	b.Helper()
	p := &pipeline{
		uid:     index.DefaultClusterID + "//Pod/" + target.Namespace + "/" + target.Name,
		done:    make(chan trace, 1),
		status:  map[string]workloadapi.WorkloadStatus{},
		statusC: make(chan struct{}, 1),
	}
	srv, err := xdsserver.New(xdsserver.Options{Authenticator: anyCaller{}, Registry: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	gs := grpc.NewServer()
	srv.Register(gs)
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	b.Cleanup(func() { srv.Stop(); gs.Stop() })

	pub, err := publish.New(publish.Options{XDS: srv})
	if err != nil {
		b.Fatal(err)
	}
	onChange := func(in *index.Inputs) {
		t0 := time.Now()
		res, err := pub.Publish(in)
		if err != nil {
			b.Errorf("publish: %v", err)
		}
		t1 := time.Now()
		out := res.Output
		p.mu.Lock()
		defer p.mu.Unlock()
		p.nSnaps++
		if p.nSnaps == 1 {
			p.firstBuild, p.firstPods, p.firstServices = t1.Sub(t0), len(out.Workloads), len(out.Services)
		}
		if w := out.Workloads[p.uid]; w != nil && (p.nSnaps == 1 || w.GetStatus() != p.lastStatus) {
			p.lastStatus, p.lastChange = w.GetStatus(), trace{onChange: t0, published: t1}
		}
	}
	began := time.Now()
	src, err := kubesource.New(kubesource.Options{Clients: c, OnChange: onChange, Validate: index.Validate,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		b.Fatal(err)
	}
	startCtx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := src.Start(startCtx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(src.Stop)
	p.startTook = time.Since(began)

	client, err := xds.New(xds.Config{
		Address:     lis.Addr().String(),
		DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
		Node:        xds.Node{IP: "172.30.0.2", PodName: "ztunnel-bench", Namespace: "istio-system", NodeName: "bench"},
		Types: []xds.TypeConfig{{
			TypeURL: workloadapi.AddressTypeURL,
			New:     func() proto.Message { return &workloadapi.Address{} },
			Handler: xds.HandlerFunc(p.handle),
		}},
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := client.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(client.Stop)
	return p
}

// watchTarget watches the target pod directly, to time the API server's
// part (write and watch delivery) apart from the source's.
func (p *pipeline) watchTarget(b *testing.B, c *kube.Clients, target *corev1.Pod) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := c.Kube.CoreV1().Pods(target.Namespace).Watch(ctx, metav1.ListOptions{
		FieldSelector: "metadata.name=" + target.Name, ResourceVersion: target.ResourceVersion})
	if err != nil {
		cancel()
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			now := time.Now()
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			st := workloadapi.WorkloadStatus_UNHEALTHY
			for _, c := range pod.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					st = workloadapi.WorkloadStatus_HEALTHY
				}
			}
			p.mu.Lock()
			if p.watchStatus != st || p.watched.IsZero() {
				p.watchStatus, p.watched = st, now
			}
			p.mu.Unlock()
		}
	}()
	b.Cleanup(func() {
		cancel()
		w.Stop()
		<-done
	})
}

// watchedAt is when the direct watch last saw the target change to status.
func (p *pipeline) watchedAt(status workloadapi.WorkloadStatus) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.watchStatus != status {
		return time.Time{}
	}
	return p.watched
}

// handle is the xDS client's handler: it notes the target's status.
func (p *pipeline) handle(d xds.Delta) []xds.Rejection {
	now := time.Now()
	for _, u := range d.Upserts {
		if u.Name != p.uid {
			continue
		}
		w := u.Message.(*workloadapi.Address).GetWorkload()
		p.mu.Lock()
		p.status[u.Name] = w.GetStatus()
		if p.armed && w.GetStatus() == p.want {
			p.armed = false
			p.done <- trace{seen: now} // await completes it from the snapshot's record
		}
		p.mu.Unlock()
		select {
		case p.statusC <- struct{}{}:
		default:
		}
	}
	return nil
}

// waitFor blocks until the client has seen the workload with status.
func (p *pipeline) waitFor(b *testing.B, ns, name string, status workloadapi.WorkloadStatus) {
	b.Helper()
	deadline := time.After(time.Minute)
	for {
		p.mu.Lock()
		got, ok := p.status[p.uid]
		p.mu.Unlock()
		if ok && got == status {
			return
		}
		select {
		case <-p.statusC:
		case <-deadline:
			b.Fatalf("client never saw %s/%s %v", ns, name, status)
		}
	}
}

// expect arms the pipeline for the next flip.
func (p *pipeline) expect(status workloadapi.WorkloadStatus) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.want, p.armed, p.armedAt = status, true, time.Now()
}

func (p *pipeline) await(b *testing.B) trace {
	b.Helper()
	select {
	case tr := <-p.done:
		// The xDS server may push before the publishing callback has
		// recorded its snapshot's times: wait for that record.
		deadline := time.Now().Add(benchFlipTimeout)
		for {
			p.mu.Lock()
			recorded, last := p.lastStatus == p.want, p.lastChange
			p.mu.Unlock()
			if recorded {
				tr.onChange, tr.published = last.onChange, last.published
				break
			}
			if time.Now().After(deadline) {
				b.Fatal("client saw the change but no snapshot carrying it was published")
			}
			time.Sleep(time.Millisecond)
		}
		if tr.onChange.Before(p.armedAt) {
			b.Fatal("client saw the change without a snapshot carrying it")
		}
		return tr
	case <-time.After(benchFlipTimeout):
		b.Fatalf("no xDS update within %v", benchFlipTimeout)
		return trace{}
	}
}

func (p *pipeline) snapshots() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nSnaps
}

func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s)-1) + 0.5)
	return s[i]
}

// procStatusKB reads a "kB" field of /proc/self/status.
func procStatusKB(b *testing.B, field string) int64 {
	b.Helper()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			v, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return v
		}
	}
	b.Fatalf("%s not in /proc/self/status", field)
	return 0
}

// resetPeakRSS makes VmHWM start again from the current RSS.
func resetPeakRSS(b *testing.B) {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Logf("cannot reset peak RSS (%v); rss-peak includes the setup", err)
	}
}
