package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"slices"
	"sync"

	"github.com/zmesh/zmesh/pkg/netns"
	"github.com/zmesh/zmesh/pkg/zdsapi"
	"github.com/zmesh/zmesh/ztunnel/redirect"
)

// Pod is what the agent needs to know of a pod on its node.
type Pod struct {
	// UID is the Kubernetes pod uid (the ZDS workload key).
	UID                             string
	Name, Namespace, ServiceAccount string
	Labels                          map[string]string
	// IPs are the pod's addresses (status.podIPs), used to find its network
	// namespace again after an agent restart; may be empty.
	IPs []netip.Addr
}

// Redirector installs and removes in-pod redirection (*redirect.Redirector).
type Redirector interface {
	Install(ns *os.File) error
	Remove(ns *os.File) error
}

// Workloads hands pods to ztunnel (*zds.Server).
type Workloads interface {
	AddPod(ctx context.Context, uid string, info *zdsapi.WorkloadInfo, netnsFile *os.File) error
	DelPod(ctx context.Context, uid string) error
}

var _ Redirector = (*redirect.Redirector)(nil)

// Config configures an Agent.
type Config struct {
	Redirector Redirector
	Workloads  Workloads
	// OnChange, when set, is told each time a pod's enrolment takes effect
	// or ends (to write the pod annotation on Kubernetes). It is called
	// synchronously, in order, after the agent's lock is released, by the
	// method that made the change.
	OnChange func(p Pod, enrolled bool)
	// Store, when set, remembers each pod's network namespace from SetNetns
	// until DeletePod, so that a restarted agent finds it again. A failure
	// to write is logged, not returned: capture works without it.
	Store  *NetnsStore
	Logger *slog.Logger
}

// Agent reconciles pods' enrolment. All methods are safe for concurrent use;
// changes are applied one at a time.
type Agent struct {
	cfg Config
	log *slog.Logger

	mu         sync.Mutex // guards namespaces, pods and pending, and serialises reconciles
	namespaces map[string]map[string]string
	pods       map[string]*podState
	pending    []change // enrolment changes to report once mu is released
}

type change struct {
	pod      Pod
	enrolled bool
}

type podState struct {
	pod       Pod
	netnsPath string // "" until the CNI plugin reports it
	enrolled  bool   // handed to ztunnel and redirected
}

// New validates cfg.
func New(cfg Config) (*Agent, error) {
	if cfg.Redirector == nil || cfg.Workloads == nil {
		return nil, errors.New("nodeagent: Redirector and Workloads are required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Agent{cfg: cfg, log: log, namespaces: map[string]map[string]string{}, pods: map[string]*podState{}}, nil
}

// SetNamespace records a namespace's labels and re-evaluates its pods.
func (a *Agent) SetNamespace(ctx context.Context, name string, labels map[string]string) error {
	a.mu.Lock()
	defer a.unlock()
	a.namespaces[name] = maps.Clone(labels)
	var errs []error
	for _, ps := range a.pods {
		if ps.pod.Namespace == name {
			errs = append(errs, a.reconcile(ctx, ps))
		}
	}
	return errors.Join(errs...)
}

// UpsertPod records a pod (from the pod source) and re-evaluates it.
func (a *Agent) UpsertPod(ctx context.Context, p Pod) error {
	a.mu.Lock()
	defer a.unlock()
	ps := a.pods[p.UID]
	if ps == nil {
		ps = &podState{}
		a.pods[p.UID] = ps
	}
	p.Labels = maps.Clone(p.Labels)
	p.IPs = slices.Clone(p.IPs)
	ps.pod = p
	return a.reconcile(ctx, ps)
}

// SetNetns records the pod's network namespace (from the CNI plugin's ADD)
// and enrols the pod if it belongs to the mesh. An error means the pod's
// traffic could not be captured: the CNI ADD must fail so that the pod does
// not run outside the mesh.
func (a *Agent) SetNetns(ctx context.Context, uid, path string) error {
	a.mu.Lock()
	defer a.unlock()
	ps := a.pods[uid]
	if ps == nil {
		// The source has not reported the pod yet; remember the netns.
		ps = &podState{pod: Pod{UID: uid}}
		a.pods[uid] = ps
	}
	ps.netnsPath = path
	if a.cfg.Store != nil {
		rec := NetnsRecord{UID: uid, Namespace: ps.pod.Namespace, Name: ps.pod.Name, Netns: path}
		if err := a.cfg.Store.Save(rec); err != nil {
			a.log.Warn("pod network namespace not persisted; a restarted agent will have to search for it", "uid", uid, "err", err)
		}
	}
	return a.reconcile(ctx, ps)
}

// DeletePod unenrols and forgets a pod (pod deleted, or CNI DEL).
func (a *Agent) DeletePod(ctx context.Context, uid string) error {
	a.mu.Lock()
	defer a.unlock()
	ps := a.pods[uid]
	if ps == nil {
		return nil
	}
	delete(a.pods, uid)
	if a.cfg.Store != nil {
		if err := a.cfg.Store.Delete(uid); err != nil {
			a.log.Warn("pod state not deleted", "uid", uid, "err", err)
		}
	}
	if !ps.enrolled {
		return nil
	}
	return a.unenrol(ctx, ps)
}

// IsEnrolled reports whether the pod is currently captured.
func (a *Agent) IsEnrolled(uid string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	ps := a.pods[uid]
	return ps != nil && ps.enrolled
}

// reconcile brings one pod to its wanted state; the caller holds a.mu.
func (a *Agent) reconcile(ctx context.Context, ps *podState) error {
	want := ps.netnsPath != "" && ps.pod.Name != "" && Enrolled(ps.pod.Labels, a.namespaces[ps.pod.Namespace])
	switch {
	case want && !ps.enrolled:
		return a.enrol(ctx, ps)
	case !want && ps.enrolled:
		return a.unenrol(ctx, ps)
	}
	return nil
}

// enrol hands the pod to ztunnel first and redirects its traffic once
// ztunnel has acknowledged, so nothing is redirected to a socket that does
// not exist yet.
func (a *Agent) enrol(ctx context.Context, ps *podState) error {
	p := ps.pod
	log := a.log.With("pod", p.Namespace+"/"+p.Name, "uid", p.UID)
	ns, err := netns.Open(ps.netnsPath)
	if err != nil {
		return fmt.Errorf("enrol %s/%s: %w", p.Namespace, p.Name, err)
	}
	defer ns.Close()
	info := &zdsapi.WorkloadInfo{Name: p.Name, Namespace: p.Namespace, ServiceAccount: p.ServiceAccount}
	if err := a.cfg.Workloads.AddPod(ctx, p.UID, info, ns); err != nil {
		return fmt.Errorf("enrol %s/%s: ztunnel: %w", p.Namespace, p.Name, err)
	}
	if err := a.cfg.Redirector.Install(ns); err != nil {
		_ = a.cfg.Workloads.DelPod(ctx, p.UID)
		return fmt.Errorf("enrol %s/%s: redirection: %w", p.Namespace, p.Name, err)
	}
	ps.enrolled = true
	log.Info("pod enrolled in the ambient mesh")
	a.notify(p, true)
	return nil
}

// unenrol stops redirection first, then takes the pod from ztunnel.
func (a *Agent) unenrol(ctx context.Context, ps *podState) error {
	p := ps.pod
	var errs []error
	if ns, err := netns.Open(ps.netnsPath); err == nil {
		if err := a.cfg.Redirector.Remove(ns); err != nil {
			errs = append(errs, fmt.Errorf("remove redirection: %w", err))
		}
		_ = ns.Close()
	} // a pod whose netns is gone has no rules left to remove
	if err := a.cfg.Workloads.DelPod(ctx, p.UID); err != nil {
		errs = append(errs, fmt.Errorf("ztunnel: %w", err))
	}
	ps.enrolled = false
	a.log.Info("pod removed from the ambient mesh", "pod", p.Namespace+"/"+p.Name, "uid", p.UID)
	a.notify(p, false)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("unenrol %s/%s: %w", p.Namespace, p.Name, err)
	}
	return nil
}

// notify queues a change for OnChange; the caller holds a.mu.
func (a *Agent) notify(p Pod, enrolled bool) {
	if a.cfg.OnChange != nil {
		a.pending = append(a.pending, change{p, enrolled})
	}
}

// unlock releases a.mu and then reports the queued changes, in order.
func (a *Agent) unlock() {
	pending := a.pending
	a.pending = nil
	a.mu.Unlock()
	for _, c := range pending {
		a.cfg.OnChange(c.pod, c.enrolled)
	}
}
