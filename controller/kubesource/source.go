package kubesource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	istioinformers "istio.io/client-go/pkg/informers/externalversions"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"

	"github.com/zmesh/zmesh/controller/index"
)

// Source follows the Kubernetes API. Create it with New, then Start; Stop
// ends it. Pod and Problems may be called from any goroutine.
type Source struct {
	opts Options
	log  *slog.Logger

	// poked holds a pending "something changed" signal (capacity 1).
	poked chan struct{}

	// mu guards the fields below it.
	mu       sync.Mutex
	state    int
	pods     cache.Indexer // the Pod informer's cache, once started
	problems []index.Problem
	// Set by Start; used by Stop.
	factories *factories
	stopInf   chan struct{}      // closed to stop the informers
	cancel    context.CancelFunc // ends the coalescing goroutine
	done      chan struct{}      // closed when it has returned

	// followed and verdicts are written by Start before the coalescing
	// goroutine starts, and afterwards only by that goroutine.
	followed []followed
	verdicts map[objKey]*verdict
	// seen holds the same verdicts by object, the cheap lookup. An entry
	// has its own generation: after a relist the cache holds new objects
	// sharing an old object's verdict, and the old object's entry must
	// still go.
	seen map[runtime.Object]*seenObject
	gen  uint64
}

const (
	stateNew = iota
	stateStarted
	stateStopped
)

// followed is a kind with a running informer.
type followed struct {
	kind  kind
	store cache.Store
}

// New validates opts. It performs no I/O.
func New(opts Options) (*Source, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Source{
		opts:     opts,
		log:      opts.Logger.With("source", "kubernetes"),
		poked:    make(chan struct{}, 1),
		verdicts: map[objKey]*verdict{},
		seen:     map[runtime.Object]*seenObject{},
	}, nil
}

// Start checks which kinds the API server serves, starts an informer for
// each, waits until every cache has synced, delivers the first snapshot and
// then follows changes until Stop. ctx bounds only the wait: on its end, or
// any other error, Start stops what it started and fails.
func (s *Source) Start(ctx context.Context) (err error) {
	s.mu.Lock()
	if s.state != stateNew {
		s.mu.Unlock()
		return errors.New("kubesource: Start called twice or after Stop")
	}
	s.state = stateStarted
	s.mu.Unlock()
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()

	served, missing, err := servedKinds(s.opts.Clients.Kube.Discovery(), kinds)
	if err != nil {
		return fmt.Errorf("kubesource: %w", err)
	}
	for _, k := range missing {
		s.log.Warn("resource not served by the API server (CRD not installed?); kind skipped until restart",
			"kind", k.name, "resource", k.gvr.String())
	}

	c, resync := s.opts.Clients, s.opts.ResyncPeriod
	f := &factories{
		kube:    informers.NewSharedInformerFactoryWithOptions(c.Kube, resync, informers.WithTransform(transform)),
		istio:   istioinformers.NewSharedInformerFactoryWithOptions(c.Istio, resync, istioinformers.WithTransform(transform)),
		gateway: gatewayinformers.NewSharedInformerFactoryWithOptions(c.Gateway, resync, gatewayinformers.WithTransform(transform)),
	}
	poke := func() {
		select {
		case s.poked <- struct{}{}:
		default:
		}
	}
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
		DeleteFunc: func(any) { poke() },
	}
	var synced []cache.InformerSynced
	var pods cache.Indexer
	for _, k := range served {
		inf := k.informer(f)
		reg, err := inf.AddEventHandler(handler)
		if err != nil {
			return fmt.Errorf("kubesource: %s event handler: %w", k.name, err)
		}
		// The registration is synced once the handler has seen the
		// initial list, so those events do not cause an extra snapshot.
		synced = append(synced, inf.HasSynced, reg.HasSynced)
		s.followed = append(s.followed, followed{kind: k, store: inf.GetStore()})
		if k.name == "Pod" {
			pods = inf.GetIndexer()
		}
	}
	stop := make(chan struct{})
	s.mu.Lock()
	s.factories, s.stopInf = f, stop
	s.mu.Unlock()
	f.kube.Start(stop)
	f.istio.Start(stop)
	f.gateway.Start(stop)

	// The wait ends with ctx, or when a concurrent Stop stops the informers.
	waitCtx, cancelWait := context.WithCancel(ctx)
	defer cancelWait()
	go func() {
		select {
		case <-stop:
			cancelWait()
		case <-waitCtx.Done():
		}
	}()
	if !cache.WaitForCacheSync(waitCtx.Done(), synced...) {
		var pending []string
		for i, fl := range s.followed {
			if !synced[2*i]() || !synced[2*i+1]() {
				pending = append(pending, fl.kind.name)
			}
		}
		cause := context.Cause(ctx)
		if cause == nil {
			cause = errors.New("stopped")
		}
		return fmt.Errorf("kubesource: caches of %s not synced: %w", strings.Join(pending, ", "), cause)
	}
	s.mu.Lock()
	if s.state != stateStarted {
		s.mu.Unlock()
		return errors.New("kubesource: stopped while starting")
	}
	s.pods = pods
	s.mu.Unlock()
	// Events up to here are in the first snapshot; later ones poke again.
	select {
	case <-s.poked:
	default:
	}
	s.deliver()

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != stateStarted {
		return errors.New("kubesource: stopped while starting")
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel, s.done = cancel, make(chan struct{})
	go s.run(runCtx, s.done)
	s.log.Info("kubernetes source started", "kinds", len(served), "skipped", len(missing))
	return nil
}

// Stop stops following changes, stops the informers and waits for every
// goroutine Start began. It is idempotent and safe after a failed Start.
// After Stop, Pod reports nothing.
func (s *Source) Stop() {
	s.mu.Lock()
	s.state = stateStopped
	cancel, done, stop, f := s.cancel, s.done, s.stopInf, s.factories
	s.cancel, s.done, s.stopInf, s.factories, s.pods = nil, nil, nil, nil, nil
	s.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	if stop != nil {
		close(stop)
		f.kube.Shutdown()
		f.istio.Shutdown()
		f.gateway.Shutdown()
	}
}

// Pod returns the cached pod namespace/name, trimmed as described at
// trimPod, or false when there is none (or the source is not running). The
// pod is the cache's own object: the caller must not modify it.
func (s *Source) Pod(namespace, name string) (*corev1.Pod, bool) {
	s.mu.Lock()
	pods := s.pods
	s.mu.Unlock()
	if pods == nil {
		return nil, false
	}
	item, ok, err := pods.GetByKey(namespace + "/" + name)
	if err != nil || !ok {
		return nil, false
	}
	p, ok := item.(*corev1.Pod)
	return p, ok
}

// Problems returns the objects left out of the latest snapshot because
// Validate rejected them, sorted by kind, namespace and name.
func (s *Source) Problems() []index.Problem {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]index.Problem(nil), s.problems...)
}
