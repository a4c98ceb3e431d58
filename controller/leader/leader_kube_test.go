package leader_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/zmesh/zmesh/controller/leader"
	"github.com/zmesh/zmesh/pkg/kube"
	"github.com/zmesh/zmesh/pkg/kube/kubetest"
)

const lease = "zmesh-test-leader"

// activity records which replicas run their task, and fails the test if
// two ever run at once.
type activity struct {
	t       *testing.T
	mu      sync.Mutex
	running map[string]bool
	starts  map[string]int
}

func newActivity(t *testing.T) *activity {
	return &activity{t: t, running: map[string]bool{}, starts: map[string]int{}}
}

// task runs as replica id until its context ends.
func (a *activity) task(id string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		a.mu.Lock()
		for other, on := range a.running {
			if on && other != id {
				a.t.Errorf("%s started while %s still runs", id, other)
			}
		}
		a.running[id] = true
		a.starts[id]++
		a.mu.Unlock()
		<-ctx.Done()
		a.mu.Lock()
		a.running[id] = false
		a.mu.Unlock()
		return ctx.Err()
	}
}

func (a *activity) runningNow() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var ids []string
	for id, on := range a.running {
		if on {
			ids = append(ids, id)
		}
	}
	return ids
}

func newElector(t *testing.T, c *kube.Clients, ns, id string) *leader.Elector {
	t.Helper()
	e, err := leader.New(leader.Options{
		Clients: c, Namespace: ns, Name: lease, Identity: id,
		LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 200 * time.Millisecond,
		TaskBackoff: 20 * time.Millisecond,
		Logger:      slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestOneLeaderAndHandover runs two electors on one lease: exactly one runs
// the task; stopping it hands over to the other quickly, never overlapping.
func TestOneLeaderAndHandover(t *testing.T) {
	c := kubetest.Clients(t)
	ns := kubetest.Namespace(t, c, "leader", nil)
	act := newActivity(t)
	electors := map[string]*leader.Elector{}
	for _, id := range []string{"replica-1", "replica-2"} {
		e := newElector(t, c, ns, id)
		e.Add("writer", act.task(id))
		if err := e.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.Stop)
		electors[id] = e
	}
	var first string
	kubetest.Eventually(t, 10*time.Second, "one leader", func() (bool, error) {
		r := act.runningNow()
		if len(r) == 1 {
			first = r[0]
		}
		return len(r) == 1, fmt.Errorf("running %v", r)
	})
	// Stays that way: the other keeps waiting while the lease is renewed.
	for range 20 {
		time.Sleep(100 * time.Millisecond)
		if r := act.runningNow(); len(r) != 1 || r[0] != first {
			t.Fatalf("running %v, want only %s", r, first)
		}
		for id, e := range electors {
			if e.IsLeader() != (id == first) {
				t.Fatalf("%s IsLeader = %v", id, e.IsLeader())
			}
		}
	}
	second := "replica-1"
	if first == second {
		second = "replica-2"
	}
	began := time.Now()
	electors[first].Stop() // cancels its task, waits, releases the lease
	if r := act.runningNow(); len(r) != 0 {
		t.Fatalf("after Stop, running %v", r)
	}
	if electors[first].IsLeader() {
		t.Fatal("stopped elector still leader")
	}
	kubetest.Eventually(t, 5*time.Second, "handover", func() (bool, error) {
		r := act.runningNow()
		return len(r) == 1 && r[0] == second, fmt.Errorf("running %v", r)
	})
	t.Logf("handover took %v", time.Since(began).Round(time.Millisecond))
	// Released on Stop: much faster than waiting out the 3s lease.
	if d := time.Since(began); d > 2*time.Second {
		t.Errorf("handover took %v; the lease was not released", d)
	}
	if !electors[second].IsLeader() {
		t.Fatal("new leader's IsLeader is false")
	}
}

// TestLossCancelsTasks takes the lease away from the leader behind its back
// and checks that its tasks are cancelled and it stops calling itself leader.
func TestLossCancelsTasks(t *testing.T) {
	c := kubetest.Clients(t)
	ns := kubetest.Namespace(t, c, "leader-loss", nil)
	act := newActivity(t)
	e := newElector(t, c, ns, "replica-1")
	e.Add("writer", act.task("replica-1"))
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	kubetest.Eventually(t, 10*time.Second, "leading", func() (bool, error) {
		return e.IsLeader() && len(act.runningNow()) == 1, nil
	})
	ctx := context.Background()
	kubetest.Eventually(t, 5*time.Second, "lease stolen", func() (bool, error) {
		l, err := c.Kube.CoordinationV1().Leases(ns).Get(ctx, lease, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		intruder, dur, now := "intruder", int32(60), metav1.NewMicroTime(time.Now())
		l.Spec = coordinationv1.LeaseSpec{HolderIdentity: &intruder, LeaseDurationSeconds: &dur, AcquireTime: &now, RenewTime: &now}
		_, err = c.Kube.CoordinationV1().Leases(ns).Update(ctx, l, metav1.UpdateOptions{})
		return err == nil, err // a conflict with a renewal is retried
	})
	kubetest.Eventually(t, 5*time.Second, "leadership lost", func() (bool, error) {
		return !e.IsLeader() && len(act.runningNow()) == 0, fmt.Errorf("leader %v, running %v", e.IsLeader(), act.runningNow())
	})
	// It keeps campaigning but cannot win while the intruder's lease lasts.
	time.Sleep(time.Second)
	if e.IsLeader() || len(act.runningNow()) != 0 {
		t.Fatal("took the lease back from a valid holder")
	}
}

// TestTaskRestartAndLateAdd checks that a failing task is restarted while
// leading, one returning nil is not, and one added while leading starts.
func TestTaskRestartAndLateAdd(t *testing.T) {
	c := kubetest.Clients(t)
	ns := kubetest.Namespace(t, c, "leader-tasks", nil)
	e := newElector(t, c, ns, "replica-1")
	var flaky, once, late atomic.Int32
	e.Add("flaky", func(ctx context.Context) error {
		if flaky.Add(1) < 3 {
			return errors.New("boom")
		}
		<-ctx.Done()
		return nil
	})
	e.Add("once", func(context.Context) error {
		once.Add(1)
		return nil
	})
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	kubetest.Eventually(t, 10*time.Second, "flaky task restarted until it stays up", func() (bool, error) {
		return flaky.Load() == 3, fmt.Errorf("flaky ran %d times", flaky.Load())
	})
	e.Add("late", func(ctx context.Context) error {
		late.Add(1)
		<-ctx.Done()
		return nil
	})
	kubetest.Eventually(t, 5*time.Second, "late task started", func() (bool, error) { return late.Load() == 1, nil })
	time.Sleep(300 * time.Millisecond)
	if got := once.Load(); got != 1 {
		t.Fatalf("task returning nil ran %d times, want 1", got)
	}
	if got := flaky.Load(); got != 3 {
		t.Fatalf("flaky ran %d times, want 3", got)
	}
}
