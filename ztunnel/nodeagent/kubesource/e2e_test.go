package kubesource_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/util/retry"

	"github.com/zmesh/zmesh/pkg/kube"
	"github.com/zmesh/zmesh/pkg/kube/kubetest"
	"github.com/zmesh/zmesh/pkg/netns"
	"github.com/zmesh/zmesh/pkg/zds"
	"github.com/zmesh/zmesh/pkg/zdsapi"
	"github.com/zmesh/zmesh/tests/e2e/cluster"
	"github.com/zmesh/zmesh/ztunnel/nodeagent"
	"github.com/zmesh/zmesh/ztunnel/nodeagent/kubesource"
	"github.com/zmesh/zmesh/ztunnel/redirect"
)

// fakeZtunnel is ztunnel's side of ZDS recording what the agent sends.
type fakeZtunnel struct {
	mu        sync.Mutex
	pods      map[string]*zdsapi.WorkloadInfo // current
	adds      map[string]int
	dels      map[string]int
	snapshots []map[string]struct{}
}

func newFakeZtunnel() *fakeZtunnel {
	return &fakeZtunnel{pods: map[string]*zdsapi.WorkloadInfo{}, adds: map[string]int{}, dels: map[string]int{}}
}

func (f *fakeZtunnel) Add(_ context.Context, uid string, info *zdsapi.WorkloadInfo, ns *os.File) error {
	if err := netns.Verify(ns); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pods[uid] = info
	f.adds[uid]++
	return nil
}

func (f *fakeZtunnel) Del(_ context.Context, uid string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.pods, uid)
	f.dels[uid]++
	return nil
}

func (f *fakeZtunnel) SnapshotSent(_ context.Context, in map[string]struct{}) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snapshots = append(f.snapshots, maps.Clone(in))
	for uid := range f.pods {
		if _, ok := in[uid]; !ok {
			delete(f.pods, uid)
		}
	}
	return nil
}

func (f *fakeZtunnel) info(uid string) *zdsapi.WorkloadInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pods[uid]
}

func (f *fakeZtunnel) has(uid string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.pods[uid]
	return ok
}

func (f *fakeZtunnel) counts(uid string) (adds, dels int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.adds[uid], f.dels[uid]
}

func (f *fakeZtunnel) lastSnapshot() (map[string]struct{}, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.snapshots) == 0 {
		return nil, 0
	}
	return f.snapshots[len(f.snapshots)-1], len(f.snapshots)
}

// env is one node: a netns cluster for the pods' namespaces, the real API
// server for the objects, a node agent daemon in Kubernetes mode, the real
// CNI plugin and a fake ztunnel.
type env struct {
	t      *testing.T
	kc     *kube.Clients
	c      *cluster.Cluster
	node   string // Kubernetes node name
	plugin string
	run    string // sockets
	state  string
	rd     *redirect.Redirector
	zt     *fakeZtunnel
	daemon *nodeagent.Daemon
}

func buildPlugin(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "zmesh-cni")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/zmesh/zmesh/ztunnel/cmd/zmesh-cni").CombinedOutput()
	if err != nil {
		t.Fatalf("go build zmesh-cni: %v: %s", err, out)
	}
	return bin
}

func newEnv(t *testing.T) *env {
	t.Helper()
	cluster.SkipUnlessRoot(t)
	kc := kubetest.Clients(t)
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("skipping: go toolchain not in PATH to build the plugin")
	}
	e := &env{t: t, kc: kc, plugin: buildPlugin(t), run: t.TempDir(), zt: newFakeZtunnel()}
	e.state = filepath.Join(e.run, "pods")
	e.c = cluster.Setup(t, cluster.Options{Nodes: 1, Prefix: "naks"})
	var err error
	if e.rd, err = redirect.New(redirect.Config{}); err != nil {
		t.Fatal(err)
	}
	// A Node object keeps the pod garbage collector away from our pods.
	e.node = fmt.Sprintf("naks-node-%08x", rand.Uint32())
	ctx := context.Background()
	if _, err := kc.Kube.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: e.node}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = kc.Kube.CoreV1().Nodes().Delete(context.Background(), e.node, metav1.DeleteOptions{}) })
	zc, err := zds.NewClient(zds.ClientConfig{Path: filepath.Join(e.run, "ztunnel.sock"), Handler: e.zt, MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := zc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(zc.Stop)
	return e
}

// startDaemon starts a node agent in Kubernetes mode.
func (e *env) startDaemon(t *testing.T) *nodeagent.Daemon {
	t.Helper()
	d, err := nodeagent.NewDaemon(nodeagent.DaemonConfig{
		NodeName:  e.node,
		Source:    kubesource.ForDaemon(kubesource.Config{Client: e.kc.Kube, NodeName: e.node, SyncTimeout: 30 * time.Second}),
		StateDir:  e.state,
		Finder:    &nodeagent.NetnsFinder{NetnsDirs: []string{"/var/run/netns"}},
		ZDSSocket: filepath.Join(e.run, "ztunnel.sock"),
		CNISocket: filepath.Join(e.run, "cni.sock"),
		ReadyAddr: "127.0.0.1:0",
		PodWait:   5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.daemon = d
	e.t.Cleanup(d.Stop) // the whole test's, not a subtest's
	return d
}

// addPod creates the Pod object on the node, its network namespace, runs
// the CNI ADD as a runtime would, then reports it Running with its IP as a
// kubelet would. It returns the pod and the ADD's error.
func (e *env) addPod(t *testing.T, ns, name string, labels map[string]string) (*cluster.Pod, error) {
	t.Helper()
	ctx := context.Background()
	created, err := e.kc.Kube.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec:       corev1.PodSpec{NodeName: e.node, ServiceAccountName: "sleep", Containers: []corev1.Container{{Name: "c", Image: "none"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	uid := string(created.UID)
	var p *cluster.Pod
	for range 50 { // high, random addresses: the netns search must not meet another run's pod
		ip := netip.AddrFrom4([4]byte{10, 244, 1, byte(150 + rand.IntN(100))})
		if p, err = e.c.AddPod(ctx, cluster.PodSpec{Name: name, Namespace: ns, Node: "node1", UID: uid, IP: ip, Labels: labels, ServiceAccount: "sleep"}); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	_, addErr := e.cni(t, "ADD", p)
	// The agent may annotate the pod meanwhile: read, modify, retry.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		kp, err := e.kc.Kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		kp.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: p.IP.String(), PodIPs: []corev1.PodIP{{IP: p.IP.String()}}}
		_, err = e.kc.Kube.CoreV1().Pods(ns).UpdateStatus(ctx, kp, metav1.UpdateOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return p, addErr
}

func (e *env) cni(t *testing.T, cmd string, p *cluster.Pod) ([]byte, error) {
	t.Helper()
	conf, err := cluster.ChainedConfig("k8s-pod-network", map[string]any{
		"type": "zmesh-cni", "agent_socket": filepath.Join(e.run, "cni.sock"), "agent_timeout": "20s",
	}, p)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return e.c.RunCNI(ctx, cluster.CNIRequest{Plugin: e.plugin, Command: cmd, Config: conf, Pod: p})
}

// captured reports whether p's namespace holds the redirection.
func (e *env) captured(t *testing.T, p *cluster.Pod) bool {
	t.Helper()
	f, err := netns.Open(p.Netns.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// iptables-nft fails to list a chain the agent is changing at that
	// moment ("incompatible"): such an error is retried, not a verdict.
	for try := 0; ; try++ {
		err = e.rd.Check(f)
		if err == nil || errors.Is(err, redirect.ErrNotInstalled) {
			return err == nil
		}
		if try == 10 {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *env) annotation(t *testing.T, p *cluster.Pod) string {
	t.Helper()
	kp, err := e.kc.Kube.CoreV1().Pods(p.Namespace).Get(context.Background(), p.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return kp.Annotations[nodeagent.AnnotationRedirection]
}

func (e *env) setNamespaceLabel(t *testing.T, ns, mode string) {
	t.Helper()
	ctx := context.Background()
	n, err := e.kc.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n.Labels == nil {
		n.Labels = map[string]string{}
	}
	if mode == "" {
		delete(n.Labels, nodeagent.LabelDataplaneMode)
	} else {
		n.Labels[nodeagent.LabelDataplaneMode] = mode
	}
	if _, err := e.kc.Kube.CoreV1().Namespaces().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	kubetest.Eventually(t, 20*time.Second, what, func() (bool, error) { return cond(), nil })
}

// wantEnrolled waits until p is captured, in ztunnel and annotated (or
// none of these).
func (e *env) wantEnrolled(t *testing.T, p *cluster.Pod, enrolled bool) {
	t.Helper()
	want := ""
	if enrolled {
		want = kubesource.AnnotationEnabled
	}
	eventually(t, fmt.Sprintf("%s enrolled=%v (rules, ZDS, annotation)", p.Key(), enrolled), func() bool {
		return e.captured(t, p) == enrolled && e.zt.has(p.UID) == enrolled && e.annotation(t, p) == want
	})
}

// ruleWatch checks a pod's redirection without pause until stopped and
// counts the checks that found it missing.
type ruleWatch struct {
	stop           chan struct{}
	done           chan struct{}
	checks, misses atomic.Int64
	firstMiss      atomic.Value
}

func watchRules(t *testing.T, rd *redirect.Redirector, p *cluster.Pod) *ruleWatch {
	t.Helper()
	f, err := netns.Open(p.Netns.Path)
	if err != nil {
		t.Fatal(err)
	}
	w := &ruleWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer f.Close()
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			w.checks.Add(1)
			if err := rd.Check(f); err != nil {
				if w.misses.Add(1) == 1 {
					w.firstMiss.Store(err.Error())
				}
			}
		}
	}()
	return w
}

func (w *ruleWatch) finish() (checks, misses int64, first any) {
	close(w.stop)
	<-w.done
	return w.checks.Load(), w.misses.Load(), w.firstMiss.Load()
}

// nftRuleset lists the pod namespace's nftables ruleset with rule handles
// (iptables-nft writes there): handles change whenever a rule is deleted
// and added again, so equal listings mean nobody touched the rules.
func nftRuleset(t *testing.T, p *cluster.Pod) string {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Log("nft not installed: ruleset comparison skipped")
		return ""
	}
	out, err := exec.Command("ip", "netns", "exec", p.Netns.Name, "nft", "-a", "list", "ruleset").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list ruleset: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "ZMESH") {
		t.Fatalf("no zmesh rules in %s's ruleset:\n%s", p.Key(), out)
	}
	return counters.ReplaceAllString(string(out), "counter")
}

var counters = regexp.MustCompile(`counter packets [0-9]+ bytes [0-9]+`)

// watchAnnotation reports every change of p's annotation until stopped.
func (e *env) watchAnnotation(t *testing.T, p *cluster.Pod) (stop func() []string) {
	t.Helper()
	kp, err := e.kc.Kube.CoreV1().Pods(p.Namespace).Get(context.Background(), p.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := e.kc.Kube.CoreV1().Pods(p.Namespace).Watch(context.Background(), metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", p.Name).String(), ResourceVersion: kp.ResourceVersion,
	})
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			if ev.Type == watch.Modified || ev.Type == watch.Deleted {
				if kp, ok := ev.Object.(*corev1.Pod); ok {
					seen = append(seen, string(ev.Type)+":"+kp.Annotations[nodeagent.AnnotationRedirection])
				}
			}
		}
	}()
	return func() []string {
		w.Stop()
		<-done
		return seen
	}
}

func TestKubernetesNodeAgent(t *testing.T) {
	e := newEnv(t)
	amb := kubetest.Namespace(t, e.kc, "naks-amb", map[string]string{nodeagent.LabelDataplaneMode: nodeagent.ModeAmbient})
	plain := kubetest.Namespace(t, e.kc, "naks-plain", nil)

	e.startDaemon(t)

	a1, err := e.addPod(t, amb, "a1", nil)
	if err != nil {
		t.Fatal(err)
	}
	opted, err := e.addPod(t, amb, "opted", map[string]string{nodeagent.LabelDataplaneMode: nodeagent.ModeNone})
	if err != nil {
		t.Fatal(err)
	}
	p1, err := e.addPod(t, plain, "p1", nil)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("enrolment by namespace label", func(t *testing.T) {
		e.wantEnrolled(t, a1, true)
		if info := e.zt.info(a1.UID); info == nil || info.Name != "a1" || info.Namespace != amb || info.ServiceAccount != "sleep" {
			t.Errorf("workload info %v", info)
		}
		rec, err := os.ReadFile(filepath.Join(e.state, a1.UID+".json"))
		if err != nil {
			t.Fatalf("state record: %v", err)
		}
		t.Logf("state record: %s", rec)
	})
	t.Run("pod label none opts out", func(t *testing.T) {
		time.Sleep(300 * time.Millisecond) // give a wrong enrolment the time to show
		if e.captured(t, opted) || e.zt.has(opted.UID) || e.annotation(t, opted) != "" {
			t.Fatal("opted-out pod enrolled")
		}
	})
	t.Run("pod in an unlabelled namespace", func(t *testing.T) {
		if e.captured(t, p1) || e.zt.has(p1.UID) || e.annotation(t, p1) != "" {
			t.Fatal("pod of a plain namespace enrolled")
		}
	})
	t.Run("namespace relabelled live", func(t *testing.T) {
		_, delsBefore := e.zt.counts(a1.UID)
		e.setNamespaceLabel(t, amb, nodeagent.ModeNone)
		e.wantEnrolled(t, a1, false)
		if _, dels := e.zt.counts(a1.UID); dels != delsBefore+1 {
			t.Errorf("DelWorkload sent %d times", dels-delsBefore)
		}
		e.setNamespaceLabel(t, amb, nodeagent.ModeAmbient)
		e.wantEnrolled(t, a1, true)
		e.setNamespaceLabel(t, amb, "")
		e.wantEnrolled(t, a1, false)
		e.setNamespaceLabel(t, amb, nodeagent.ModeAmbient)
		e.wantEnrolled(t, a1, true)
		// The plain namespace joins: its running pod is enrolled live.
		e.setNamespaceLabel(t, plain, nodeagent.ModeAmbient)
		e.wantEnrolled(t, p1, true)
		if e.captured(t, opted) {
			t.Fatal("opted-out pod enrolled by a namespace change")
		}
	})

	restart := func(t *testing.T) {
		t.Helper()
		_, snapsBefore := e.zt.lastSnapshot()
		rules := watchRules(t, e.rd, a1)
		stopAnn := e.watchAnnotation(t, a1)
		before := nftRuleset(t, a1)
		e.daemon.Stop()
		time.Sleep(200 * time.Millisecond) // ztunnel notices the agent is gone
		e.startDaemon(t)
		eventually(t, "a new ZDS snapshot", func() bool { _, n := e.zt.lastSnapshot(); return n > snapsBefore })
		snap, _ := e.zt.lastSnapshot()
		for _, p := range []*cluster.Pod{a1, p1} {
			if _, ok := snap[p.UID]; !ok {
				t.Errorf("%s not replayed in the snapshot %v", p.Key(), snap)
			}
		}
		if _, ok := snap[opted.UID]; ok {
			t.Error("opted-out pod in the snapshot")
		}
		time.Sleep(time.Second) // let a wrong annotation change show
		checks, misses, first := rules.finish()
		if after := nftRuleset(t, a1); after != before {
			t.Errorf("pod's ruleset rewritten across the restart:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		t.Logf("redirection checked %d times across the restart", checks)
		if misses > 0 || checks < 3 {
			t.Errorf("redirection missing in %d of %d checks (first: %v)", misses, checks, first)
		}
		if seen := stopAnn(); slices.ContainsFunc(seen, func(s string) bool { return s != "MODIFIED:enabled" }) {
			t.Errorf("annotation changed across the restart: %v", seen)
		}
		if lost := e.daemon.Lost(); len(lost) > 0 {
			t.Errorf("pods lost: %+v", lost)
		}
		e.wantEnrolled(t, a1, true)
		e.wantEnrolled(t, p1, true)
	}
	t.Run("agent restart from the state directory", restart)
	t.Run("agent restart by netns search", func(t *testing.T) {
		// Without records the agent finds the namespaces by pod IP.
		if err := os.RemoveAll(e.state); err != nil {
			t.Fatal(err)
		}
		restart(t)
		if _, err := os.Stat(filepath.Join(e.state, a1.UID+".json")); err != nil {
			t.Errorf("found namespace not recorded again: %v", err)
		}
	})
	t.Run("label changed while the agent is down", func(t *testing.T) {
		e.daemon.Stop()
		e.setNamespaceLabel(t, plain, "")
		e.startDaemon(t)
		e.wantEnrolled(t, p1, false)
		e.wantEnrolled(t, a1, true)
	})
	t.Run("lost pod is reported", func(t *testing.T) {
		e.daemon.Stop()
		// The record points at a namespace that no longer holds the pod,
		// and no namespace holds its address.
		lost, err := e.addPodObjectOnly(t, amb, "lost")
		if err != nil {
			t.Fatal(err)
		}
		d := e.startDaemon(t)
		got := d.Lost()
		if len(got) != 1 || got[0].Pod.UID != lost {
			st, _ := d.Agent().Status(lost)
			n, _ := e.kc.Kube.CoreV1().Namespaces().Get(context.Background(), amb, metav1.GetOptions{})
			kp, _ := e.kc.Kube.CoreV1().Pods(amb).Get(context.Background(), "lost", metav1.GetOptions{})
			t.Fatalf("lost = %+v; the pod's agent status: %+v; namespace labels %v; pod labels %v", got, st, n.Labels, kp.Labels)
		}
		t.Logf("reported: %s", got[0].Reason)
	})
	t.Run("pod deleted", func(t *testing.T) {
		if err := e.kc.Kube.CoreV1().Pods(amb).Delete(context.Background(), "a1", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "a1 gone from the API", func() bool {
			_, err := e.kc.Kube.CoreV1().Pods(amb).Get(context.Background(), "a1", metav1.GetOptions{})
			return apierrors.IsNotFound(err)
		})
		eventually(t, "a1 unenrolled after deletion", func() bool { return !e.captured(t, a1) && !e.zt.has(a1.UID) })
		if _, err := os.Stat(filepath.Join(e.state, a1.UID+".json")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("state record left: %v", err)
		}
	})
}

// addPodObjectOnly creates a Running pod with an address no namespace
// holds and a state record pointing nowhere: an enrolled pod whose sandbox
// vanished while the agent was down.
func (e *env) addPodObjectOnly(t *testing.T, ns, name string) (string, error) {
	t.Helper()
	ctx := context.Background()
	kp, err := e.kc.Kube.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.PodSpec{NodeName: e.node, Containers: []corev1.Container{{Name: "c", Image: "none"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	kp.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "192.0.2.77", PodIPs: []corev1.PodIP{{IP: "192.0.2.77"}}}
	if _, err := e.kc.Kube.CoreV1().Pods(ns).UpdateStatus(ctx, kp, metav1.UpdateOptions{}); err != nil {
		return "", err
	}
	store, err := nodeagent.NewNetnsStore(e.state)
	if err != nil {
		return "", err
	}
	return string(kp.UID), store.Save(nodeagent.NetnsRecord{UID: string(kp.UID), Namespace: ns, Name: name, Netns: "/var/run/netns/naks-gone"})
}
