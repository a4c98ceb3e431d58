package leader

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func metaOf(namespace, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: namespace, Name: name}
}

// launch runs tk in t until t ends; the caller holds e.mu.
func (e *Elector) launch(t *term, tk task) {
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		e.runTask(t, tk)
	}()
}

// runTask runs tk, restarting it with exponential backoff after errors,
// until it returns nil or the term ends.
func (e *Elector) runTask(t *term, tk task) {
	backoff := e.opts.TaskBackoff
	for {
		started := time.Now()
		err := tk.fn(t.ctx)
		if t.ctx.Err() != nil {
			return
		}
		if err == nil {
			e.log.Info("leader task finished", "task", tk.name)
			return
		}
		if time.Since(started) > maxTaskBackoff {
			backoff = e.opts.TaskBackoff // it ran for a while: not a crash loop
		}
		e.log.Error("leader task failed; restarting", "task", tk.name, "err", err, "backoff", backoff)
		timer := time.NewTimer(backoff)
		select {
		case <-t.ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		backoff = min(2*backoff, maxTaskBackoff)
	}
}
