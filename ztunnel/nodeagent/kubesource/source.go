package kubesource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/zmesh/zmesh/ztunnel/nodeagent"
)

// Agent is what the source drives (*nodeagent.Agent).
type Agent interface {
	nodeagent.PodSink
	IsEnrolled(uid string) bool
}

var _ Agent = (*nodeagent.Agent)(nil)

// Config configures a Source.
type Config struct {
	// Client talks to the API server. Required.
	Client kubernetes.Interface
	// NodeName selects the pods (spec.nodeName). Required.
	NodeName string
	// Agent receives namespaces and pods. Required.
	Agent Agent
	// SyncTimeout bounds the wait for the first list of pods and
	// namespaces (default 2m): Start fails after it.
	SyncTimeout time.Duration
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Source feeds the agent from the API server. Pods in phase Succeeded or
// Failed and host-network pods are left out (deleted from the agent if it
// had them). Changes are applied by one worker, in order of arrival per
// object; a change the agent fails to apply is retried with backoff.
type Source struct {
	cfg Config
	log *slog.Logger

	factory  informers.SharedInformerFactory // pods on this node
	nsFact   informers.SharedInformerFactory // namespaces
	pods     cache.SharedIndexInformer
	nss      cache.SharedIndexInformer
	queue    workqueue.TypedRateLimitingInterface[string] // "pod/<ns>/<name>" or "ns/<name>"
	annotate *annotator

	// mu is held while the agent is fed, so that SyncPod and the worker
	// never hand it views out of order. It guards applied and appliedNS.
	mu        sync.Mutex
	applied   map[string]string            // pod key → uid given to the agent
	appliedNS map[string]map[string]string // namespace → labels given to the agent

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

const uidIndex = "uid"

// New validates cfg and builds the informers; it performs no I/O.
func New(cfg Config) (*Source, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("kubesource: a Kubernetes client is required")
	case cfg.NodeName == "":
		return nil, errors.New("kubesource: the node name is required")
	case cfg.Agent == nil:
		return nil, errors.New("kubesource: an agent is required")
	case cfg.SyncTimeout < 0:
		return nil, errors.New("kubesource: negative sync timeout")
	}
	if cfg.SyncTimeout == 0 {
		cfg.SyncTimeout = 2 * time.Minute
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "kube-source", "node", cfg.NodeName)
	selector := fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
	factory := informers.NewSharedInformerFactoryWithOptions(cfg.Client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = selector }))
	nsFact := informers.NewSharedInformerFactory(cfg.Client, 0)
	s := &Source{
		cfg:     cfg,
		log:     log,
		factory: factory,
		nsFact:  nsFact,
		pods:    factory.Core().V1().Pods().Informer(),
		nss:     nsFact.Core().V1().Namespaces().Informer(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "zmesh-nodeagent-pods"}),
		applied:   map[string]string{},
		appliedNS: map[string]map[string]string{},
	}
	if err := s.pods.AddIndexers(cache.Indexers{uidIndex: func(obj any) ([]string, error) {
		if p, ok := obj.(*corev1.Pod); ok {
			return []string{string(p.UID)}, nil
		}
		return nil, nil
	}}); err != nil {
		return nil, fmt.Errorf("kubesource: %w", err)
	}
	s.annotate = newAnnotator(cfg.Client, s.pods.GetIndexer(), cfg.Agent, log)
	return s, nil
}

// Start starts the informers, waits until both have listed (failing after
// SyncTimeout or when ctx ends), applies every namespace and then every pod
// to the agent, and starts the worker. ctx bounds the start only.
func (s *Source) Start(ctx context.Context) error {
	podKey := func(obj any) {
		key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
		if err == nil {
			s.queue.Add("pod/" + key)
			s.annotate.enqueue(key)
		}
	}
	nsKey := func(obj any) {
		key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
		if err == nil {
			s.queue.Add("ns/" + key)
		}
	}
	if _, err := s.pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: podKey, UpdateFunc: func(_, n any) { podKey(n) }, DeleteFunc: podKey,
	}); err != nil {
		return fmt.Errorf("kubesource: %w", err)
	}
	if _, err := s.nss.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: nsKey, UpdateFunc: func(_, n any) { nsKey(n) }, DeleteFunc: nsKey,
	}); err != nil {
		return fmt.Errorf("kubesource: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.factory.Start(runCtx.Done())
	s.nsFact.Start(runCtx.Done())
	syncCtx, stop := context.WithTimeout(ctx, s.cfg.SyncTimeout)
	defer stop()
	if !cache.WaitForCacheSync(syncCtx.Done(), s.pods.HasSynced, s.nss.HasSynced) {
		s.Stop()
		return fmt.Errorf("kubesource: pods and namespaces not listed within %v: %w", s.cfg.SyncTimeout, context.Cause(syncCtx))
	}
	s.applyAll(ctx)
	s.log.Info("pods and namespaces synced", "pods", len(s.pods.GetStore().ListKeys()), "namespaces", len(s.nss.GetStore().ListKeys()))
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for s.processNext(runCtx) {
		}
	}()
	return nil
}

// applyAll applies the first view: namespaces before pods, so that no pod
// is judged without its namespace's labels. Failures are queued for retry.
func (s *Source) applyAll(ctx context.Context) {
	for _, key := range s.nss.GetStore().ListKeys() {
		if err := s.sync(ctx, "ns/"+key); err != nil {
			s.log.Warn("namespace not applied; will retry", "namespace", key, "err", err)
			s.queue.AddRateLimited("ns/" + key)
		}
	}
	for _, key := range s.pods.GetStore().ListKeys() {
		if err := s.sync(ctx, "pod/"+key); err != nil {
			s.log.Warn("pod not applied; will retry", "pod", key, "err", err)
			s.queue.AddRateLimited("pod/" + key)
		}
	}
}

// Stop ends the worker, the annotation writer and the informers, and waits
// for their goroutines.
func (s *Source) Stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.queue.ShutDown()
	s.annotate.stop()
	s.wg.Wait()
	s.factory.Shutdown()
	s.nsFact.Shutdown()
	s.cancel = nil
}

// Restored implements nodeagent.RestoreObserver: annotations are written
// from now on, starting with a pass over every pod.
func (s *Source) Restored() {
	s.annotate.start()
	for _, key := range s.pods.GetStore().ListKeys() {
		s.annotate.enqueue(key)
	}
}

// PodChanged implements nodeagent.ChangeObserver.
func (s *Source) PodChanged(p nodeagent.Pod, _ bool) {
	s.annotate.enqueue(p.Namespace + "/" + p.Name)
}

// SyncPod implements nodeagent.PodSyncer: when the pod with uid is on this
// node it (and its namespace) are applied to the agent now.
func (s *Source) SyncPod(ctx context.Context, uid string) (bool, error) {
	objs, err := s.pods.GetIndexer().ByIndex(uidIndex, uid)
	if err != nil || len(objs) == 0 {
		return false, err
	}
	p := objs[0].(*corev1.Pod)
	if skip(p) {
		return false, nil
	}
	if err := s.sync(ctx, "ns/"+p.Namespace); err != nil {
		return true, err
	}
	return true, s.sync(ctx, "pod/"+p.Namespace+"/"+p.Name)
}

func (s *Source) processNext(ctx context.Context) bool {
	key, quit := s.queue.Get()
	if quit {
		return false
	}
	defer s.queue.Done(key)
	if err := s.sync(ctx, key); err != nil {
		s.log.Warn("change not applied; will retry", "key", key, "err", err)
		s.queue.AddRateLimited(key)
		return true
	}
	s.queue.Forget(key)
	return true
}

// skip reports pods the agent must not hold.
func skip(p *corev1.Pod) bool {
	return p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// sync applies the cached state of one object to the agent.
func (s *Source) sync(ctx context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if name, ok := strings.CutPrefix(key, "ns/"); ok {
		var labels map[string]string
		obj, exists, err := s.nss.GetStore().GetByKey(name)
		if err != nil {
			return err
		}
		if exists {
			labels = obj.(*corev1.Namespace).Labels
		}
		if old, ok := s.appliedNS[name]; ok && maps.Equal(old, labels) {
			return nil
		}
		if err := s.cfg.Agent.SetNamespace(ctx, name, labels); err != nil {
			delete(s.appliedNS, name) // applied again on retry
			return err
		}
		if exists {
			s.appliedNS[name] = maps.Clone(labels)
		} else {
			delete(s.appliedNS, name)
		}
		return nil
	}
	key = strings.TrimPrefix(key, "pod/")
	obj, exists, err := s.pods.GetStore().GetByKey(key)
	if err != nil {
		return err
	}
	old := s.applied[key]
	var p *corev1.Pod
	if exists {
		p = obj.(*corev1.Pod)
	}
	if p == nil || skip(p) || (old != "" && old != string(p.UID)) {
		if old != "" {
			delete(s.applied, key)
			if err := s.cfg.Agent.DeletePod(ctx, old); err != nil {
				s.log.Warn("pod removal incomplete", "pod", key, "uid", old, "err", err)
			}
		}
		if p == nil || skip(p) {
			return nil
		}
	}
	s.applied[key] = string(p.UID)
	return s.cfg.Agent.UpsertPod(ctx, nodeagent.PodFromObject(p))
}

// FieldManager names the agent's writes to the API server.
const FieldManager = "zmesh-nodeagent"

// requestTimeout bounds one API request of the annotator.
const requestTimeout = 30 * time.Second

// ForDaemon returns a nodeagent.DaemonConfig.Source building a Source on
// cfg for the daemon's agent (cfg.Agent is set by it).
func ForDaemon(cfg Config) func(*nodeagent.Agent) (nodeagent.Source, error) {
	return func(a *nodeagent.Agent) (nodeagent.Source, error) {
		cfg.Agent = a
		return New(cfg)
	}
}

var (
	_ nodeagent.Source          = (*Source)(nil)
	_ nodeagent.ChangeObserver  = (*Source)(nil)
	_ nodeagent.RestoreObserver = (*Source)(nil)
)
