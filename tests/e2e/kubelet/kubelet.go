// Package kubelet stands in for the kubelet, the scheduler and the container
// runtime of a network-namespace cluster (tests/e2e/cluster) attached to a
// real API server.
//
// For every Pod in the namespaces it watches, it binds unscheduled pods to
// one of its nodes, builds the pod's network namespace on that node, runs
// the chained CNI plugin's ADD as a runtime would, starts the pod's
// "containers" through a Runtime callback inside the pod namespace, and
// writes the pod's status (IP, Running, Ready) back. When a pod is deleted
// it stops the containers, runs CNI DEL, removes the namespace and confirms
// the deletion (grace period 0), as a kubelet does.
package kubelet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"

	"github.com/zmesh/zmesh/pkg/kube"
	"github.com/zmesh/zmesh/tests/e2e/cluster"
)

// Runtime starts a pod's containers inside p.Netns. It returns a function
// that stops them; the kubelet calls it before the namespace is removed.
type Runtime func(ctx context.Context, obj *corev1.Pod, p *cluster.Pod) (stop func(), err error)

// Options configures a Kubelet.
type Options struct {
	Clients *kube.Clients
	Cluster *cluster.Cluster
	// NodePrefix prefixes the cluster's node names ("node1") to form the
	// Node objects' names, so that several test clusters can share one API
	// server.
	NodePrefix string
	// Namespaces limits the pods handled; empty handles every namespace
	// (only pods bound, or bindable, to this kubelet's nodes are touched).
	Namespaces []string
	// CNIPlugin is the chained plugin's binary; CNIConfig returns the
	// plugin's configuration for a node. Without a plugin no CNI call is
	// made.
	CNIPlugin string
	CNIConfig func(node *cluster.Node) map[string]any
	// Runtime starts containers; nil starts none.
	Runtime Runtime
	Logger  *slog.Logger
}

// Kubelet is a running stand-in. Create with New, Start, and Stop.
type Kubelet struct {
	opts  Options
	log   *slog.Logger
	nodes map[string]*cluster.Node // by API node name
	queue workqueue.TypedRateLimitingInterface[string]

	factories []informers.SharedInformerFactory
	podStores []cache.Store

	mu       sync.Mutex
	running  map[string]*runningPod // by namespace/name; guarded by mu
	reserved map[string]netip.Addr  // pod IPs asked for by tests; guarded by mu
	next     int                    // round-robin scheduling; guarded by mu

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type runningPod struct {
	uid  string
	pod  *cluster.Pod
	stop func()
}

// New validates opts.
func New(opts Options) (*Kubelet, error) {
	if opts.Clients == nil || opts.Cluster == nil {
		return nil, errors.New("kubelet: Clients and Cluster are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	k := &Kubelet{opts: opts, log: opts.Logger, nodes: map[string]*cluster.Node{}, running: map[string]*runningPod{}, reserved: map[string]netip.Addr{}}
	for _, n := range opts.Cluster.Nodes() {
		k.nodes[opts.NodePrefix+n.Name] = n
	}
	return k, nil
}

// NodeName is the API name of a cluster node.
func (k *Kubelet) NodeName(n *cluster.Node) string { return k.opts.NodePrefix + n.Name }

// Start registers the Node objects, starts watching pods and returns once
// the caches are synced.
func (k *Kubelet) Start(ctx context.Context) error {
	for name, n := range k.nodes {
		if err := k.registerNode(ctx, name, n); err != nil {
			return err
		}
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	k.cancel = cancel
	k.queue = workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	nss := k.opts.Namespaces
	if len(nss) == 0 {
		nss = []string{metav1.NamespaceAll}
	}
	var synced []cache.InformerSynced
	for _, ns := range nss {
		f := informers.NewSharedInformerFactoryWithOptions(k.opts.Clients.Kube, 0, informers.WithNamespace(ns))
		inf := f.Core().V1().Pods().Informer()
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    k.enqueue,
			UpdateFunc: func(_, o any) { k.enqueue(o) },
			DeleteFunc: k.enqueue,
		}); err != nil {
			cancel()
			return fmt.Errorf("kubelet: %w", err)
		}
		k.factories = append(k.factories, f)
		k.podStores = append(k.podStores, inf.GetStore())
		synced = append(synced, inf.HasSynced)
		f.Start(runCtx.Done())
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		k.Stop()
		return errors.New("kubelet: pod caches did not sync")
	}
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		for k.processNext(runCtx) {
		}
	}()
	return nil
}

// Stop stops watching and every running pod's containers; it leaves the
// pod namespaces to the cluster's teardown.
func (k *Kubelet) Stop() {
	if k.cancel != nil {
		k.cancel()
	}
	if k.queue != nil {
		k.queue.ShutDown()
	}
	for _, f := range k.factories {
		f.Shutdown()
	}
	k.wg.Wait()
	k.mu.Lock()
	defer k.mu.Unlock()
	for key, rp := range k.running {
		if rp.stop != nil {
			rp.stop()
		}
		delete(k.running, key)
	}
}

// Pod returns the cluster pod running for namespace/name, if any.
func (k *Kubelet) Pod(namespace, name string) *cluster.Pod {
	k.mu.Lock()
	defer k.mu.Unlock()
	if rp := k.running[namespace+"/"+name]; rp != nil {
		return rp.pod
	}
	return nil
}

func (k *Kubelet) registerNode(ctx context.Context, name string, n *cluster.Node) error {
	obj := n.Object()
	obj.Name = name
	obj.Labels = map[string]string{"kubernetes.io/hostname": name}
	obj.TypeMeta = metav1.TypeMeta{}
	nodes := k.opts.Clients.Kube.CoreV1().Nodes()
	if _, err := nodes.Create(ctx, obj, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("kubelet: register node %s: %w", name, err)
	}
	// Node controllers may write the object meanwhile: retry on conflict.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := nodes.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Status = obj.Status
		_, err = nodes.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("kubelet: node %s status: %w", name, err)
	}
	return nil
}

func (k *Kubelet) enqueue(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err == nil {
		k.queue.Add(key)
	}
}

func (k *Kubelet) processNext(ctx context.Context) bool {
	key, quit := k.queue.Get()
	if quit {
		return false
	}
	defer k.queue.Done(key)
	if err := k.sync(ctx, key); err != nil {
		if ctx.Err() != nil {
			return true
		}
		k.log.Warn("kubelet: pod sync failed; retrying", "pod", key, "err", err)
		k.queue.AddRateLimited(key)
		return true
	}
	k.queue.Forget(key)
	return true
}

func (k *Kubelet) lookup(key string) (*corev1.Pod, bool) {
	for _, s := range k.podStores {
		if obj, ok, _ := s.GetByKey(key); ok {
			return obj.(*corev1.Pod), true
		}
	}
	return nil, false
}

// sync brings one pod's sandbox in line with its object.
func (k *Kubelet) sync(ctx context.Context, key string) error {
	pod, exists := k.lookup(key)
	k.mu.Lock()
	rp := k.running[key]
	k.mu.Unlock()
	switch {
	case !exists:
		if rp != nil {
			return k.teardown(ctx, key, rp)
		}
		return nil
	case rp != nil && rp.uid != string(pod.UID):
		// A new pod took the name: the old sandbox goes first.
		if err := k.teardown(ctx, key, rp); err != nil {
			return err
		}
		rp = nil
	}
	if pod.DeletionTimestamp != nil {
		if rp != nil {
			if err := k.teardown(ctx, key, rp); err != nil {
				return err
			}
		}
		if pod.Spec.NodeName != "" && k.nodes[pod.Spec.NodeName] == nil {
			return nil // another kubelet's pod
		}
		zero := int64(0)
		err := k.opts.Clients.Kube.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name,
			metav1.DeleteOptions{GracePeriodSeconds: &zero, Preconditions: metav1.NewUIDPreconditions(string(pod.UID))})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("confirm deletion: %w", err)
		}
		return nil
	}
	if pod.Spec.NodeName == "" {
		return k.schedule(ctx, pod)
	}
	node := k.nodes[pod.Spec.NodeName]
	if node == nil || rp != nil || podFinished(pod) {
		return nil
	}
	return k.run(ctx, key, pod, node)
}

func podFinished(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// schedule binds pod to the next node, round robin.
func (k *Kubelet) schedule(ctx context.Context, pod *corev1.Pod) error {
	names := make([]string, 0, len(k.nodes))
	for n := range k.nodes {
		names = append(names, n)
	}
	sort.Strings(names)
	k.mu.Lock()
	node := names[k.next%len(names)]
	k.next++
	k.mu.Unlock()
	err := k.opts.Clients.Kube.CoreV1().Pods(pod.Namespace).Bind(ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: node},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
		return fmt.Errorf("bind to %s: %w", node, err)
	}
	return nil
}

// run builds the sandbox, runs CNI ADD and the containers, and reports the
// pod running and ready.
func (k *Kubelet) run(ctx context.Context, key string, pod *corev1.Pod, node *cluster.Node) error {
	sa := pod.Spec.ServiceAccountName
	var ports []corev1.ContainerPort
	for _, c := range pod.Spec.Containers {
		ports = append(ports, c.Ports...)
	}
	spec := cluster.PodSpec{Name: pod.Name, Namespace: pod.Namespace, Node: node.Name, UID: string(pod.UID),
		ServiceAccount: sa, Labels: pod.Labels, Annotations: pod.Annotations, Ports: ports}
	k.mu.Lock()
	if ip, ok := k.reserved[key]; ok {
		spec.IP = ip
		delete(k.reserved, key)
	}
	k.mu.Unlock()
	if ip, err := netip.ParseAddr(pod.Status.PodIP); err == nil && node.PodCIDR.Contains(ip) {
		spec.IP = ip // a restarted harness keeps the address the API knows
	}
	cp, err := k.opts.Cluster.AddPod(ctx, spec)
	if err != nil {
		return err
	}
	rp := &runningPod{uid: string(pod.UID), pod: cp}
	fail := func(err error) error {
		if rp.stop != nil {
			rp.stop()
		}
		_ = k.opts.Cluster.RemovePod(context.WithoutCancel(ctx), cp)
		return err
	}
	if k.opts.CNIPlugin != "" {
		if err := k.cni(ctx, "ADD", cp); err != nil {
			return fail(err)
		}
	}
	if k.opts.Runtime != nil {
		stop, err := k.opts.Runtime(ctx, pod, cp)
		if err != nil {
			return fail(fmt.Errorf("start containers: %w", err))
		}
		rp.stop = stop
	}
	k.mu.Lock()
	k.running[key] = rp
	k.mu.Unlock()
	if err := k.writeStatus(ctx, pod, cp); err != nil {
		return err // the sandbox stays; the retry only writes the status
	}
	k.log.Debug("kubelet: pod running", "pod", key, "node", pod.Spec.NodeName, "ip", cp.IP)
	return nil
}

func (k *Kubelet) cni(ctx context.Context, command string, cp *cluster.Pod) error {
	var plugin map[string]any
	if k.opts.CNIConfig != nil {
		plugin = k.opts.CNIConfig(cp.Node)
	}
	if plugin == nil {
		plugin = map[string]any{}
	}
	if _, ok := plugin["type"]; !ok {
		plugin["type"] = "zmesh-cni"
	}
	conf, err := cluster.ChainedConfig("k8s-pod-network", plugin, cp)
	if err != nil {
		return err
	}
	_, err = k.opts.Cluster.RunCNI(ctx, cluster.CNIRequest{Plugin: k.opts.CNIPlugin, Command: command, Config: conf, Pod: cp})
	return err
}

// writeStatus reports the pod as a kubelet would once its containers run.
func (k *Kubelet) writeStatus(ctx context.Context, pod *corev1.Pod, cp *cluster.Pod) error {
	pods := k.opts.Clients.Kube.CoreV1().Pods(pod.Namespace)
	for attempt := 0; ; attempt++ {
		cur, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("get pod: %w", err)
		}
		if cur.UID != pod.UID {
			return nil
		}
		now := metav1.NewTime(time.Now())
		want := cp.Object().Status
		want.StartTime = &now
		for i := range want.Conditions {
			want.Conditions[i].LastTransitionTime = now
		}
		for _, c := range cur.Spec.Containers {
			want.ContainerStatuses = append(want.ContainerStatuses, corev1.ContainerStatus{
				Name: c.Name, Image: c.Image, ImageID: c.Image, Ready: true, Started: ptr(true),
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
			})
		}
		cur.Status = want
		_, err = pods.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) && attempt < 10 {
			continue
		}
		if err != nil {
			return fmt.Errorf("update pod status: %w", err)
		}
		return nil
	}
}

// ReserveIP makes the next pod namespace/name started get ip (which must be
// free on its node by then), to test address reuse.
func (k *Kubelet) ReserveIP(namespace, name, ip string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.reserved[namespace+"/"+name] = netip.MustParseAddr(ip)
}

// SetReady flips a running pod's Ready condition (a readiness probe's
// verdict).
func (k *Kubelet) SetReady(ctx context.Context, namespace, name string, ready bool) error {
	pods := k.opts.Clients.Kube.CoreV1().Pods(namespace)
	cur, err := pods.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	for i, c := range cur.Status.Conditions {
		if c.Type == corev1.PodReady || c.Type == corev1.ContainersReady {
			cur.Status.Conditions[i].Status = status
			cur.Status.Conditions[i].LastTransitionTime = metav1.Now()
		}
	}
	_, err = pods.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
	return err
}

// teardown stops the containers, runs CNI DEL and removes the sandbox.
func (k *Kubelet) teardown(ctx context.Context, key string, rp *runningPod) error {
	if rp.stop != nil {
		rp.stop()
		rp.stop = nil
	}
	var errs []error
	if k.opts.CNIPlugin != "" {
		if err := k.cni(ctx, "DEL", rp.pod); err != nil {
			errs = append(errs, err)
		}
	}
	if err := k.opts.Cluster.RemovePod(ctx, rp.pod); err != nil {
		errs = append(errs, err)
	}
	k.mu.Lock()
	delete(k.running, key)
	k.mu.Unlock()
	if len(errs) > 0 {
		k.log.Warn("kubelet: pod teardown incomplete", "pod", key, "err", errors.Join(errs...))
	}
	return nil
}

func ptr[T any](v T) *T { return &v }
