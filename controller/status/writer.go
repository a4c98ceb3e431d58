package status

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	istioinformers "istio.io/client-go/pkg/informers/externalversions"
	securitylisters "istio.io/client-go/pkg/listers/security/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/zmesh/zmesh/controller/index"
	"github.com/zmesh/zmesh/pkg/kube"
)

// FieldManager is the server-side apply field manager of the Writer.
const FieldManager = "zmesh-controller"

// Condition types written by the Writer, as Istio names them.
const (
	ConditionWaypointBound    = "istio.io/WaypointBound"
	ConditionZtunnelAccepted  = "ZtunnelAccepted"
	ConditionWaypointAccepted = "WaypointAccepted"
)

// Options configures a Writer.
type Options struct {
	// Clients reach the API server. Required.
	Clients *kube.Clients
	// Namespace limits the Writer to one namespace; empty is all.
	Namespace string
	// Selects, when set, limits the Writer further to the namespaces for
	// which it returns true (the controller's discovery selectors).
	Selects func(namespace string) bool
	// Workers is the number of objects written in parallel. Default 2.
	Workers int
	// Logger receives the Writer's logs. Default slog.Default().
	Logger *slog.Logger
}

// Writer keeps the status conditions of Services and AuthorizationPolicies
// in line with the latest index Output.
type Writer struct {
	opts Options
	log  *slog.Logger

	// mu guards latest.
	mu     sync.Mutex
	latest *index.Output
	// signal has room for one pending wake-up; Update never blocks on it.
	signal chan struct{}
	// running serializes Run calls.
	running  sync.Mutex
	warnOnce sync.Once
}

// New validates opts and returns a Writer; it starts nothing.
func New(opts Options) (*Writer, error) {
	if opts.Clients == nil || opts.Clients.Kube == nil || opts.Clients.Istio == nil {
		return nil, errors.New("status: Clients (Kube and Istio) are required")
	}
	if opts.Workers <= 0 {
		opts.Workers = 2
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Writer{opts: opts, log: opts.Logger.With("component", "status"), signal: make(chan struct{}, 1)}, nil
}

// Update hands the Writer the Output of the latest Build. It only stores
// out and wakes Run: it never blocks and may be called whether or not Run
// is running. out must not be modified afterwards.
//
// An Output whose ServiceWaypoints and PolicyStatus are both nil was not
// made by index.Build or an index.Builder (both always set them; a derived Output must
// carry them over) and is ignored rather than taken to mean "no status",
// which would erase every condition.
func (w *Writer) Update(out *index.Output) {
	if out == nil || (out.ServiceWaypoints == nil && out.PolicyStatus == nil) {
		w.warnOnce.Do(func() {
			w.log.Warn("status: ignoring an index output without ServiceWaypoints and PolicyStatus; derived outputs must carry them over")
		})
		return
	}
	w.mu.Lock()
	w.latest = out
	w.mu.Unlock()
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

func (w *Writer) current() *index.Output {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.latest
}

// Queue keys: kind prefix + "<ns>/<name>".
const (
	svcPrefix = "Service/"
	apPrefix  = "AuthorizationPolicy/"
)

// run is the state of one Run call.
type run struct {
	w        *Writer
	queue    workqueue.TypedRateLimitingInterface[string]
	services corelisters.ServiceLister
	policies securitylisters.AuthorizationPolicyLister
	// written remembers what this run last wrote per key, so that a
	// repeated sync costs no API call even before the informer has seen
	// the write. Guarded by mu.
	mu      sync.Mutex
	written map[string]writeRecord
}

// Run writes status until ctx is done. It blocks and returns nil when ctx
// ends; it may be called again later (each time this replica becomes
// leader). Concurrent calls are serialized.
func (w *Writer) Run(ctx context.Context) error {
	w.running.Lock()
	defer w.running.Unlock()
	var kopts []informers.SharedInformerOption
	var iopts []istioinformers.SharedInformerOption
	if w.opts.Namespace != "" {
		kopts = append(kopts, informers.WithNamespace(w.opts.Namespace))
		iopts = append(iopts, istioinformers.WithNamespace(w.opts.Namespace))
	}
	kf := informers.NewSharedInformerFactoryWithOptions(w.opts.Clients.Kube, 0, kopts...)
	isf := istioinformers.NewSharedInformerFactoryWithOptions(w.opts.Clients.Istio, 0, iopts...)
	svcInf := kf.Core().V1().Services()
	apInf := isf.Security().V1().AuthorizationPolicies()
	r := &run{
		w: w,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "status"}),
		services: svcInf.Lister(),
		policies: apInf.Lister(),
		written:  map[string]writeRecord{},
	}
	// Object events re-check that object: someone may have dropped or
	// changed our condition.
	for prefix, inf := range map[string]cache.SharedIndexInformer{svcPrefix: svcInf.Informer(), apPrefix: apInf.Informer()} {
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { r.enqueueObject(prefix, o) },
			UpdateFunc: func(_, o any) { r.enqueueObject(prefix, o) },
		}); err != nil {
			return fmt.Errorf("status: handler: %w", err)
		}
	}
	kf.Start(ctx.Done())
	isf.Start(ctx.Done())
	var wg sync.WaitGroup
	defer func() {
		r.queue.ShutDown()
		wg.Wait()
		kf.Shutdown()
		isf.Shutdown()
	}()
	if !cache.WaitForCacheSync(ctx.Done(), svcInf.Informer().HasSynced, apInf.Informer().HasSynced) {
		return nil
	}
	for range w.opts.Workers {
		wg.Go(func() {
			for r.processNext(ctx) {
			}
		})
	}
	// Objects carrying our conditions from an earlier leader are checked
	// once, so that stale conditions are removed.
	r.enqueueStale()
	var prev *index.Output
	for {
		if out := w.current(); out != nil && out != prev {
			r.enqueueOutput(prev, out)
			prev = out
		}
		select {
		case <-ctx.Done():
			return nil
		case <-w.signal:
		}
	}
}

func (r *run) inScope(ns string) bool {
	return (r.w.opts.Namespace == "" || r.w.opts.Namespace == ns) && (r.w.opts.Selects == nil || r.w.opts.Selects(ns))
}

func (r *run) enqueueObject(prefix string, o any) {
	if key, err := cache.MetaNamespaceKeyFunc(o); err == nil {
		r.queue.Add(prefix + key)
	}
}

// enqueueOutput queues every object whose desired conditions may differ
// between prev and out.
func (r *run) enqueueOutput(prev, out *index.Output) {
	add := func(prefix, key string) {
		ns, _, _ := cache.SplitMetaNamespaceKey(key)
		if r.inScope(ns) {
			r.queue.Add(prefix + key)
		}
	}
	for k := range out.ServiceWaypoints {
		add(svcPrefix, k)
	}
	for k := range out.PolicyStatus {
		add(apPrefix, k)
	}
	if prev == nil {
		return
	}
	for k := range prev.ServiceWaypoints {
		if _, ok := out.ServiceWaypoints[k]; !ok {
			add(svcPrefix, k)
		}
	}
	for k := range prev.PolicyStatus {
		if _, ok := out.PolicyStatus[k]; !ok {
			add(apPrefix, k)
		}
	}
}

// enqueueStale queues every cached object that carries a condition of ours.
func (r *run) enqueueStale() {
	svcs, _ := r.services.List(everything())
	for _, s := range svcs {
		if hasServiceCondition(s) {
			r.enqueueObject(svcPrefix, s)
		}
	}
	aps, _ := r.policies.List(everything())
	for _, ap := range aps {
		if hasPolicyCondition(ap) {
			r.enqueueObject(apPrefix, ap)
		}
	}
}

func (r *run) processNext(ctx context.Context) bool {
	key, quit := r.queue.Get()
	if quit {
		return false
	}
	defer r.queue.Done(key)
	err := r.sync(ctx, key)
	switch {
	case err == nil:
		r.queue.Forget(key)
	case ctx.Err() != nil:
	case apierrors.IsConflict(err):
		r.queue.AddRateLimited(key)
	default:
		r.w.log.Warn("status write failed", "object", key, "error", err, "retries", r.queue.NumRequeues(key))
		r.queue.AddRateLimited(key)
	}
	return true
}

func (r *run) sync(ctx context.Context, key string) error {
	out := r.w.current()
	if out == nil {
		// Nothing built yet: leave existing conditions until we know better.
		return nil
	}
	switch {
	case len(key) > len(svcPrefix) && key[:len(svcPrefix)] == svcPrefix:
		return r.syncService(ctx, key[len(svcPrefix):], out)
	case len(key) > len(apPrefix) && key[:len(apPrefix)] == apPrefix:
		return r.syncPolicy(ctx, key[len(apPrefix):], out)
	}
	return nil
}

// unchangedSince reports whether this run already wrote fingerprint for
// key while the cached object still had resourceVersion rv: the cache has
// simply not caught up with that write yet.
func (r *run) unchangedSince(key, fingerprint, rv string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	w, ok := r.written[key]
	return ok && w.fingerprint == fingerprint && w.cachedRV == rv
}

// remember records a successful write of fingerprint for key, made when
// the cached object had resourceVersion rv.
func (r *run) remember(key, fingerprint, rv string) {
	r.mu.Lock()
	r.written[key] = writeRecord{fingerprint: fingerprint, cachedRV: rv}
	r.mu.Unlock()
}

type writeRecord struct{ fingerprint, cachedRV string }
