package kubesource

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/zmesh/zmesh/ztunnel/nodeagent"
)

// AnnotationEnabled is the value of nodeagent.AnnotationRedirection on a
// captured pod.
const AnnotationEnabled = "enabled"

// annotator keeps each pod's redirection annotation equal to the agent's
// view: present while the pod is enrolled, absent otherwise. It compares the
// informer's copy of the pod with Agent.IsEnrolled and patches only on a
// difference; its own patch comes back as a pod update, which settles any
// change made meanwhile. Failed patches are retried with backoff; a pod
// deleted (or replaced under the same name) meanwhile is dropped.
type annotator struct {
	client kubernetes.Interface
	pods   cache.Indexer
	agent  Agent
	log    *slog.Logger
	queue  workqueue.TypedRateLimitingInterface[string] // "<ns>/<name>"

	once sync.Once
	wg   sync.WaitGroup
}

func newAnnotator(client kubernetes.Interface, pods cache.Indexer, agent Agent, log *slog.Logger) *annotator {
	return &annotator{
		client: client, pods: pods, agent: agent, log: log.With("component", "pod-annotator"),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "zmesh-nodeagent-annotations"}),
	}
}

func (a *annotator) enqueue(key string) { a.queue.Add(key) }

// start runs the worker; later calls do nothing.
func (a *annotator) start() {
	a.once.Do(func() {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			for a.next() {
			}
		}()
	})
}

// stop shuts the queue down and waits for the worker.
func (a *annotator) stop() {
	a.queue.ShutDown()
	a.wg.Wait()
}

func (a *annotator) next() bool {
	key, quit := a.queue.Get()
	if quit {
		return false
	}
	defer a.queue.Done(key)
	if err := a.sync(key); err != nil {
		a.log.Warn("pod annotation not written; will retry", "pod", key, "err", err)
		a.queue.AddRateLimited(key)
		return true
	}
	a.queue.Forget(key)
	return true
}

func (a *annotator) sync(key string) error {
	obj, exists, err := a.pods.GetByKey(key)
	if err != nil || !exists {
		return err
	}
	p := obj.(*corev1.Pod)
	want := a.agent.IsEnrolled(string(p.UID))
	have := p.Annotations[nodeagent.AnnotationRedirection] == AnnotationEnabled
	if want == have {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	err = PatchRedirection(ctx, a.client, p.Namespace, p.Name, p.UID, want)
	switch {
	case err == nil:
		a.log.Info("pod annotation updated", "pod", key, "uid", p.UID, "enabled", want)
		return nil
	case apierrors.IsNotFound(err), (apierrors.IsConflict(err) || apierrors.IsInvalid(err)) && a.replaced(key, p.UID):
		return nil // gone: nothing to annotate
	}
	return err
}

// replaced reports whether the cached pod under key is no longer uid.
func (a *annotator) replaced(key string, uid types.UID) bool {
	obj, exists, err := a.pods.GetByKey(key)
	return err == nil && (!exists || obj.(*corev1.Pod).UID != uid)
}

// PatchRedirection sets (enabled) or removes the redirection annotation
// of pod namespace/name with a merge patch through the pods/status
// subresource. The patch carries uid as a precondition: a pod recreated
// under the same name is not touched (the API server answers Invalid:
// metadata.uid is immutable).
func PatchRedirection(ctx context.Context, c kubernetes.Interface, namespace, name string, uid types.UID, enabled bool) error {
	var value any // JSON null removes the key
	if enabled {
		value = AnnotationEnabled
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"uid":         uid,
		"annotations": map[string]any{nodeagent.AnnotationRedirection: value},
	}})
	if err != nil {
		return fmt.Errorf("kubesource: annotation patch: %w", err)
	}
	_, err = c.CoreV1().Pods(namespace).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: FieldManager}, "status")
	if err != nil {
		return fmt.Errorf("kubesource: annotate pod %s/%s: %w", namespace, name, err)
	}
	return nil
}
