package leader

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Elector campaigns for a Lease and runs tasks while it holds it. Create it
// with New, Add tasks, then Start; Stop ends everything. IsLeader and Add
// may be called from any goroutine.
type Elector struct {
	opts   Options
	log    *slog.Logger
	status prometheus.Gauge // nil without a Registerer

	// mu guards everything below.
	mu       sync.Mutex
	state    int
	tasks    []task
	leading  bool
	term     *term              // the current leadership term; nil when not leading
	cancel   context.CancelFunc // ends the campaign (and releases the lease)
	done     chan struct{}      // closed when the campaign loop returns
	stopping bool               // set by Stop: no new term starts
}

const (
	stateNew = iota
	stateStarted
	stateStopped
)

type task struct {
	name string
	fn   func(ctx context.Context) error
}

// term is one period of leadership: its tasks run under ctx.
type term struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New validates opts (including client-go's constraints on the durations)
// and registers the status gauge. It performs no I/O.
func New(opts Options) (*Elector, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	e := &Elector{opts: opts, log: opts.Logger.With("lease", opts.Namespace+"/"+opts.Name, "identity", opts.Identity)}
	if _, err := leaderelection.NewLeaderElector(e.config()); err != nil {
		return nil, fmt.Errorf("leader: %w", err)
	}
	if opts.Registerer != nil {
		e.status = prometheus.NewGauge(prometheus.GaugeOpts{
			Name:        "leader_election_master_status",
			Help:        "1 while this replica holds the lease, else 0.",
			ConstLabels: prometheus.Labels{"name": opts.Name},
		})
		if err := opts.Registerer.Register(e.status); err != nil {
			return nil, fmt.Errorf("leader: register metric: %w", err)
		}
	}
	return e, nil
}

// config is the client-go configuration of one campaign.
func (e *Elector) config() leaderelection.LeaderElectionConfig {
	return leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metaOf(e.opts.Namespace, e.opts.Name),
			Client:     e.opts.Clients.Kube.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: e.opts.Identity},
		},
		LeaseDuration: e.opts.LeaseDuration,
		RenewDeadline: e.opts.RenewDeadline,
		RetryPeriod:   e.opts.RetryPeriod,
		// Stop cancels and waits for the tasks before it cancels the
		// campaign, so releasing on cancel never hands over early.
		ReleaseOnCancel: true,
		Name:            e.opts.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: e.startTerm,
			OnStoppedLeading: e.stoppedLeading,
		},
	}
}

// Add registers a task that runs whenever this replica leads, under a
// context cancelled when leadership ends. A task that returns an error while
// still leader is logged and restarted after a backoff; one that returns nil
// is done for this term. Added while leading, it starts at once.
func (e *Elector) Add(name string, fn func(ctx context.Context) error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t := task{name: name, fn: fn}
	e.tasks = append(e.tasks, t)
	if e.term != nil {
		e.launch(e.term, t)
	}
}

// Start begins campaigning; it returns at once. Campaigning goes on, across
// lost and regained leadership, until Stop. ctx's values are kept, not its
// cancellation.
func (e *Elector) Start(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.state != stateNew {
		return errors.New("leader: Start called twice or after Stop")
	}
	e.state = stateStarted
	ctx, e.cancel = context.WithCancel(context.WithoutCancel(ctx))
	e.done = make(chan struct{})
	go e.campaign(ctx, e.done)
	e.log.Info("campaigning for leadership")
	return nil
}

// Stop cancels the tasks and waits for them, then stops campaigning,
// releasing the lease if held, and waits for that. Idempotent.
func (e *Elector) Stop() {
	e.mu.Lock()
	e.state = stateStopped
	e.stopping = true
	t := e.term
	cancel, done := e.cancel, e.done
	e.cancel, e.done = nil, nil
	e.mu.Unlock()
	if t != nil {
		t.cancel()
		t.wg.Wait()
	}
	if cancel != nil {
		cancel()
		<-done
	}
}

// IsLeader reports whether this replica currently holds the lease.
func (e *Elector) IsLeader() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leading
}

// campaign runs elections until ctx ends.
func (e *Elector) campaign(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(e.config())
		if err != nil { // New checked the same configuration
			e.log.Error("leader election not possible", "err", err)
			return
		}
		le.Run(ctx) // returns when leadership is lost or ctx ends
		e.endTerm()
	}
}

// startTerm is client-go's OnStartedLeading: it starts every task under
// ctx, which client-go cancels when leadership ends.
func (e *Elector) startTerm(ctx context.Context) {
	e.mu.Lock()
	defer e.mu.Unlock()
	// A callback that runs late, after this leadership already ended (and
	// endTerm ran), or after Stop began, must not start anything.
	if e.stopping || ctx.Err() != nil || e.term != nil {
		return
	}
	t := &term{}
	t.ctx, t.cancel = context.WithCancel(ctx)
	e.term, e.leading = t, true
	e.setStatus(1)
	e.log.Info("became leader; starting tasks", "tasks", len(e.tasks))
	for _, tk := range e.tasks {
		e.launch(t, tk)
	}
}

// stoppedLeading is client-go's OnStoppedLeading; it also runs after a
// campaign that never won.
func (e *Elector) stoppedLeading() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.leading {
		e.log.Info("leadership lost")
	}
	e.leading = false
	e.setStatus(0)
}

// endTerm cancels the current term's tasks and waits for them.
func (e *Elector) endTerm() {
	e.mu.Lock()
	t := e.term
	e.term, e.leading = nil, false
	e.mu.Unlock()
	if t != nil {
		t.cancel()
		t.wg.Wait()
	}
}

func (e *Elector) setStatus(v float64) {
	if e.status != nil {
		e.status.Set(v)
	}
}
