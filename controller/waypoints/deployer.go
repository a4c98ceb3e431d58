package waypoints

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"
	gwlisters "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1"
)

// Deployer reconciles waypoint Gateways into ServiceAccounts, Deployments
// and Services, and writes Gateway and GatewayClass status.
type Deployer struct {
	opts Options
	log  *slog.Logger

	// running guards against two concurrent Runs.
	running sync.Mutex
}

// New validates opts and returns a Deployer; it starts nothing.
func New(opts Options) (*Deployer, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	return &Deployer{opts: opts, log: opts.Logger.With("component", "waypoints")}, nil
}

// run is the state of one Run call.
type run struct {
	d        *Deployer
	queue    workqueue.TypedRateLimitingInterface[string]
	gateways gwlisters.GatewayLister
	deploys  appslisters.DeploymentLister
	services corelisters.ServiceLister
	accounts corelisters.ServiceAccountLister

	// mu guards written.
	mu sync.Mutex
	// written holds, per Gateway key, the status last applied and the
	// resourceVersion of the Gateway it was computed from (see
	// writeGatewayStatus).
	written map[string]statusWrite
}

// Run ensures the istio-waypoint GatewayClass, then reconciles waypoint
// Gateways until ctx is done. It blocks, returns nil when ctx ends, and may
// be called again afterwards (for example each time this replica becomes
// leader); concurrent calls are serialized.
func (d *Deployer) Run(ctx context.Context) error {
	d.running.Lock()
	defer d.running.Unlock()
	for delay := time.Second; ; delay = min(2*delay, 30*time.Second) {
		err := d.ensureGatewayClass(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errForeignClass) {
			return err
		}
		d.log.Warn("gateway class not ready; retrying", "error", err, "delay", delay)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
	}

	nsOpt := func(ns string) []informers.SharedInformerOption {
		opts := []informers.SharedInformerOption{informers.WithTweakListOptions(func(lo *metav1.ListOptions) {
			lo.LabelSelector = LabelManaged + "=" + ManagedValue
		})}
		if ns != "" {
			opts = append(opts, informers.WithNamespace(ns))
		}
		return opts
	}
	kf := informers.NewSharedInformerFactoryWithOptions(d.opts.Clients.Kube, 0, nsOpt(d.opts.Namespace)...)
	var gwOpts []gwinformers.SharedInformerOption
	if d.opts.Namespace != "" {
		gwOpts = append(gwOpts, gwinformers.WithNamespace(d.opts.Namespace))
	}
	gf := gwinformers.NewSharedInformerFactoryWithOptions(d.opts.Clients.Gateway, 0, gwOpts...)

	r := &run{
		d:       d,
		written: map[string]statusWrite{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "waypoints"}),
	}
	gwInf := gf.Gateway().V1().Gateways()
	depInf := kf.Apps().V1().Deployments()
	svcInf := kf.Core().V1().Services()
	saInf := kf.Core().V1().ServiceAccounts()
	r.gateways, r.deploys, r.services, r.accounts = gwInf.Lister(), depInf.Lister(), svcInf.Lister(), saInf.Lister()

	if _, err := gwInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    r.enqueueGateway,
		UpdateFunc: func(_, n any) { r.enqueueGateway(n) },
		DeleteFunc: r.enqueueGateway,
	}); err != nil {
		return fmt.Errorf("waypoints: gateway handler: %w", err)
	}
	for _, inf := range []cache.SharedIndexInformer{depInf.Informer(), svcInf.Informer(), saInf.Informer()} {
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    r.enqueueOwner,
			UpdateFunc: func(_, n any) { r.enqueueOwner(n) },
			DeleteFunc: r.enqueueOwner,
		}); err != nil {
			return fmt.Errorf("waypoints: handler: %w", err)
		}
	}

	kf.Start(ctx.Done())
	gf.Start(ctx.Done())
	var wg sync.WaitGroup
	defer func() {
		r.queue.ShutDown()
		wg.Wait()
		kf.Shutdown()
		gf.Shutdown()
	}()
	synced := cache.WaitForCacheSync(ctx.Done(), gwInf.Informer().HasSynced, depInf.Informer().HasSynced,
		svcInf.Informer().HasSynced, saInf.Informer().HasSynced)
	if !synced {
		return nil // ctx ended
	}
	d.log.Info("waypoint deployer running", "namespace", d.opts.Namespace)
	for range d.opts.Workers {
		wg.Go(func() {
			for r.processNext(ctx) {
			}
		})
	}
	<-ctx.Done()
	return nil
}

func (r *run) enqueueGateway(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	gw, ok := obj.(*gatewayv1.Gateway)
	if !ok {
		return
	}
	r.queue.Add(gw.Namespace + "/" + gw.Name)
}

// enqueueOwner queues the Gateway a deployed object belongs to, so that
// edits and deletions of it are repaired.
func (r *run) enqueueOwner(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	m, ok := obj.(metav1.Object)
	if !ok {
		return
	}
	if name := m.GetLabels()[LabelGatewayName]; name != "" {
		r.queue.Add(m.GetNamespace() + "/" + name)
	}
}

func (r *run) processNext(ctx context.Context) bool {
	key, quit := r.queue.Get()
	if quit {
		return false
	}
	defer r.queue.Done(key)
	if err := r.reconcile(ctx, key); err != nil {
		if ctx.Err() != nil {
			return true
		}
		r.d.log.Warn("waypoint reconcile failed", "gateway", key, "error", err, "retries", r.queue.NumRequeues(key))
		r.queue.AddRateLimited(key)
		return true
	}
	r.queue.Forget(key)
	return true
}

// reconcile brings one Gateway's deployed objects and status in line.
func (r *run) reconcile(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil //nolint:nilerr // malformed keys are never retried
	}
	if sel := r.d.opts.Selects; sel != nil && !sel(ns) {
		return nil
	}
	gw, err := r.gateways.Gateways(ns).Get(name)
	if apierrors.IsNotFound(err) {
		// Deleted: the garbage collector removes what it owned.
		r.forgetStatus(key)
		return nil
	}
	if err != nil {
		return fmt.Errorf("get gateway: %w", err)
	}
	if gw.DeletionTimestamp != nil {
		return nil // being deleted: the garbage collector takes over
	}
	if string(gw.Spec.GatewayClassName) != GatewayClassName {
		// Possibly moved to another class: drop what we deployed for it.
		return r.deleteOwned(ctx, gw)
	}
	v := checkGateway(gw)
	if !v.ok {
		if err := r.deleteOwned(ctx, gw); err != nil {
			return err
		}
		return r.writeGatewayStatus(ctx, gw, v, nil, "")
	}
	svc, err := r.d.apply(ctx, gw)
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		if serr := r.writeGatewayStatus(ctx, gw, v, nil, "failed to deploy the waypoint: "+err.Error()); serr != nil {
			r.d.log.Warn("gateway status write failed", "gateway", key, "error", serr)
		}
		return err
	}
	return r.writeGatewayStatus(ctx, gw, v, svc, "")
}

// apply server-side-applies the ServiceAccount, Deployment and Service of
// gw and returns the Service as stored.
func (d *Deployer) apply(ctx context.Context, gw *gatewayv1.Gateway) (*corev1.Service, error) {
	opts := metav1.ApplyOptions{FieldManager: FieldManager, Force: true}
	c := d.opts.Clients.Kube
	if _, err := c.CoreV1().ServiceAccounts(gw.Namespace).Apply(ctx, renderServiceAccount(gw), opts); err != nil {
		return nil, fmt.Errorf("apply service account: %w", err)
	}
	if _, err := c.AppsV1().Deployments(gw.Namespace).Apply(ctx, d.renderDeployment(gw), opts); err != nil {
		return nil, fmt.Errorf("apply deployment: %w", err)
	}
	svc, err := c.CoreV1().Services(gw.Namespace).Apply(ctx, renderService(gw), opts)
	if err != nil {
		return nil, fmt.Errorf("apply service: %w", err)
	}
	return svc, nil
}

// deleteOwned removes the objects deployed for gw (those it controls).
func (r *run) deleteOwned(ctx context.Context, gw *gatewayv1.Gateway) error {
	owned := func(m metav1.Object) bool {
		ref := metav1.GetControllerOf(m)
		return ref != nil && ref.UID == gw.UID
	}
	sel := labels.SelectorFromSet(labels.Set{LabelGatewayName: gw.Name})
	c := r.d.opts.Clients.Kube
	del := func(kind, name string, f func(context.Context, string, metav1.DeleteOptions) error) error {
		if err := f(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete %s %s/%s: %w", kind, gw.Namespace, name, err)
		}
		r.d.log.Info("deleted waypoint object", "kind", kind, "namespace", gw.Namespace, "name", name)
		return nil
	}
	deps, _ := r.deploys.Deployments(gw.Namespace).List(sel)
	for _, o := range deps {
		if owned(o) {
			if err := del("Deployment", o.Name, c.AppsV1().Deployments(gw.Namespace).Delete); err != nil {
				return err
			}
		}
	}
	svcs, _ := r.services.Services(gw.Namespace).List(sel)
	for _, o := range svcs {
		if owned(o) {
			if err := del("Service", o.Name, c.CoreV1().Services(gw.Namespace).Delete); err != nil {
				return err
			}
		}
	}
	sas, _ := r.accounts.ServiceAccounts(gw.Namespace).List(sel)
	for _, o := range sas {
		if owned(o) {
			if err := del("ServiceAccount", o.Name, c.CoreV1().ServiceAccounts(gw.Namespace).Delete); err != nil {
				return err
			}
		}
	}
	return nil
}
