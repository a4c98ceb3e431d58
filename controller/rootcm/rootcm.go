// Package rootcm publishes the mesh root certificate to every namespace as
// the ConfigMap istio-ca-root-cert (key root-cert.pem, label
// istio.io/config=true), the way Istio's namespace controller does: it
// creates missing ConfigMaps and repairs edited or deleted ones. It runs on
// the elected leader only.
package rootcm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/zmesh/zmesh/pkg/mtls"
)

// Names of the published ConfigMap (Istio's).
const (
	// ConfigMapName is the ConfigMap kept in every namespace.
	ConfigMapName = "istio-ca-root-cert"
	// DataKey holds the root certificate PEM.
	DataKey = "root-cert.pem"
	// ConfigLabel marks the ConfigMap as mesh configuration; its value is "true".
	ConfigLabel = "istio.io/config"
)

// DefaultResync is how often the informers replay every object, so a
// ConfigMap whose repair failed for a reason that produced no event is
// retried.
const DefaultResync = 10 * time.Minute

// Options configure New.
type Options struct {
	// Client reads namespaces and ConfigMaps and writes ConfigMaps. Required;
	// it needs list/watch on namespaces and list/watch/create/update on
	// configmaps in every namespace.
	Client kubernetes.Interface
	// RootPEM is the mesh root certificate(s), PEM. Required.
	RootPEM []byte
	// NamespaceSelector, when set, limits publishing to namespaces whose
	// labels match (nil: every namespace).
	NamespaceSelector labels.Selector
	// Resync is the informers' resync period (DefaultResync when zero).
	Resync time.Duration
	// Logger receives create/repair lines and errors (discarded when nil).
	Logger *slog.Logger
}

// Publisher keeps the ConfigMap in every namespace while Run runs. Run may
// be called again after it returned (on each leadership term), but not
// concurrently.
type Publisher struct {
	client   kubernetes.Interface
	selector labels.Selector
	resync   time.Duration
	log      *slog.Logger

	mu      sync.Mutex // guards root, running and queue
	root    []byte
	running bool
	queue   workqueue.TypedRateLimitingInterface[string] // set while Run runs
}

// New validates the options and returns a Publisher. It starts nothing.
func New(opts Options) (*Publisher, error) {
	if opts.Client == nil {
		return nil, errors.New("rootcm: nil Kubernetes client")
	}
	if err := checkRoot(opts.RootPEM); err != nil {
		return nil, err
	}
	resync := opts.Resync
	if resync <= 0 {
		resync = DefaultResync
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Publisher{
		client:   opts.Client,
		selector: opts.NamespaceSelector,
		resync:   resync,
		log:      logger,
		root:     bytes.Clone(opts.RootPEM),
	}, nil
}

func checkRoot(pemBytes []byte) error {
	if _, err := mtls.ParseCertificatesPEM(pemBytes); err != nil {
		return fmt.Errorf("rootcm: root certificate PEM: %w", err)
	}
	return nil
}

// SetRoot replaces the published root (for example after a plugged-in CA
// changed); a running Publisher rewrites every namespace's ConfigMap.
func (p *Publisher) SetRoot(rootPEM []byte) error {
	if err := checkRoot(rootPEM); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if bytes.Equal(p.root, rootPEM) {
		return nil
	}
	p.root = bytes.Clone(rootPEM)
	if p.queue != nil {
		p.queue.Add(allNamespaces) // the worker re-enqueues every namespace
	}
	return nil
}

// allNamespaces is a queue key meaning "re-enqueue every namespace"; it
// cannot collide with a namespace name (names are DNS labels).
const allNamespaces = "*"

func (p *Publisher) rootPEM() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.root
}

// Run watches namespaces and ConfigMaps and keeps the ConfigMap in every
// (selected, non-terminating) namespace until ctx ends, then stops its
// informers and worker, waits for them and returns nil. It returns an error
// at once if another Run is in progress.
func (p *Publisher) Run(ctx context.Context) error {
	p.mu.Lock()
	if p.running {
		p.mu.Unlock()
		return errors.New("rootcm: publisher is already running")
	}
	p.running = true
	queue := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "rootcm"},
	)
	p.queue = queue
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.running = false
		p.queue = nil
		p.mu.Unlock()
	}()

	nsFactory := informers.NewSharedInformerFactoryWithOptions(p.client, p.resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			if p.selector != nil {
				o.LabelSelector = p.selector.String()
			}
		}))
	cmFactory := informers.NewSharedInformerFactoryWithOptions(p.client, p.resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", ConfigMapName).String()
		}))
	nsInformer := nsFactory.Core().V1().Namespaces()
	cmInformer := cmFactory.Core().V1().ConfigMaps()

	enqueueNS := func(obj any) {
		if ns, ok := obj.(*corev1.Namespace); ok {
			queue.Add(ns.Name)
		}
	}
	enqueueCM := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if cm, ok := obj.(*corev1.ConfigMap); ok {
			queue.Add(cm.Namespace)
		}
	}
	if _, err := nsInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueueNS,
		UpdateFunc: func(_, obj any) { enqueueNS(obj) },
	}); err != nil {
		queue.ShutDown()
		return fmt.Errorf("rootcm: namespace event handler: %w", err)
	}
	if _, err := cmInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueueCM,
		UpdateFunc: func(_, obj any) { enqueueCM(obj) },
		DeleteFunc: enqueueCM,
	}); err != nil {
		queue.ShutDown()
		return fmt.Errorf("rootcm: configmap event handler: %w", err)
	}

	var wg sync.WaitGroup
	infCtx, stopInformers := context.WithCancel(ctx)
	nsFactory.Start(infCtx.Done())
	cmFactory.Start(infCtx.Done())
	defer func() {
		stopInformers()
		queue.ShutDown()
		wg.Wait()
		nsFactory.Shutdown()
		cmFactory.Shutdown()
	}()

	if !cache.WaitForCacheSync(ctx.Done(), nsInformer.Informer().HasSynced, cmInformer.Informer().HasSynced) {
		return nil // ctx ended before the caches synced
	}
	w := &worker{
		p:          p,
		queue:      queue,
		namespaces: nsInformer.Lister(),
		configMaps: cmInformer.Lister(),
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.run(ctx)
	}()
	p.log.Info("publishing root certificate ConfigMap", "configMap", ConfigMapName)
	<-ctx.Done()
	return nil
}

// worker reconciles one namespace at a time from the queue.
type worker struct {
	p          *Publisher
	queue      workqueue.TypedRateLimitingInterface[string]
	namespaces corelisters.NamespaceLister
	configMaps corelisters.ConfigMapLister
}

func (w *worker) run(ctx context.Context) {
	for {
		key, quit := w.queue.Get()
		if quit {
			return
		}
		w.process(ctx, key)
	}
}

func (w *worker) process(ctx context.Context, key string) {
	defer w.queue.Done(key)
	if key == allNamespaces {
		nss, err := w.namespaces.List(labels.Everything())
		if err == nil {
			for _, ns := range nss {
				w.queue.Add(ns.Name)
			}
		}
		w.queue.Forget(key)
		return
	}
	if err := w.reconcile(ctx, key); err != nil {
		if ctx.Err() != nil {
			return
		}
		var r retryError
		if errors.As(err, &r) {
			w.p.log.Debug("root certificate ConfigMap changed meanwhile, retrying", "namespace", key, "error", err)
		} else {
			w.p.log.Warn("root certificate ConfigMap not published", "namespace", key, "error", err)
		}
		w.queue.AddRateLimited(key)
		return
	}
	w.queue.Forget(key)
}

// reconcile makes namespace's ConfigMap hold the root, creating it if
// missing. Namespaces that are gone, unselected or terminating are skipped.
func (w *worker) reconcile(ctx context.Context, namespace string) error {
	ns, err := w.namespaces.Get(namespace)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("namespace cache: %w", err)
	}
	if ns.DeletionTimestamp != nil || ns.Status.Phase == corev1.NamespaceTerminating {
		return nil
	}
	root := w.p.rootPEM()
	cms := w.p.client.CoreV1().ConfigMaps(namespace)
	cm, err := w.configMaps.ConfigMaps(namespace).Get(ConfigMapName)
	if apierrors.IsNotFound(err) {
		_, err = cms.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{
				Name:      ConfigMapName,
				Namespace: namespace,
				Labels:    map[string]string{ConfigLabel: "true"},
			},
			Data: map[string]string{DataKey: string(root)},
		}, metav1.CreateOptions{})
		switch {
		case err == nil:
			w.p.log.Debug("created root certificate ConfigMap", "namespace", namespace)
			return nil
		case apierrors.IsAlreadyExists(err):
			// The cache has not seen it yet: look again after a backoff.
			return retryError{fmt.Errorf("create: %w", err)}
		case terminating(err):
			return nil
		default:
			return fmt.Errorf("create: %w", err)
		}
	}
	if err != nil {
		return fmt.Errorf("configmap cache: %w", err)
	}
	if cm.DeletionTimestamp == nil && cm.Data[DataKey] == string(root) && cm.Labels[ConfigLabel] == "true" {
		return nil
	}
	if cm.DeletionTimestamp != nil {
		// Being deleted (finalizers); its delete event brings us back.
		return nil
	}
	updated := cm.DeepCopy()
	if updated.Data == nil {
		updated.Data = map[string]string{}
	}
	updated.Data[DataKey] = string(root)
	if updated.Labels == nil {
		updated.Labels = map[string]string{}
	}
	updated.Labels[ConfigLabel] = "true"
	_, err = cms.Update(ctx, updated, metav1.UpdateOptions{})
	switch {
	case err == nil:
		w.p.log.Info("repaired root certificate ConfigMap", "namespace", namespace)
		return nil
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		return retryError{fmt.Errorf("update: %w", err)} // the cache is behind
	default:
		return fmt.Errorf("update: %w", err)
	}
}

// retryError marks a failure caused by a stale cache: expected, retried
// quietly.
type retryError struct{ err error }

func (r retryError) Error() string { return r.err.Error() }
func (r retryError) Unwrap() error { return r.err }

// terminating reports the API server's refusal to create objects in a
// namespace that is being deleted.
func terminating(err error) bool {
	return apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause)
}
