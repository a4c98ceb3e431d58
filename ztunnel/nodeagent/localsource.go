package nodeagent

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/zmesh/zmesh/pkg/manifestdir"
)

// PodSink receives what a pod source learns (*Agent).
type PodSink interface {
	SetNamespace(ctx context.Context, name string, labels map[string]string) error
	UpsertPod(ctx context.Context, p Pod) error
	DeletePod(ctx context.Context, uid string) error
}

var _ PodSink = (*Agent)(nil)

// LocalSourceConfig configures a LocalSource.
type LocalSourceConfig struct {
	// Dir is the controller's manifest directory (controller --config-dir),
	// read recursively for *.yaml, *.yml and *.json. Required.
	Dir string
	// NodeName selects the pods of this node (spec.nodeName). Required.
	NodeName string
	// Sink receives namespaces and this node's pods. Required.
	Sink PodSink
	// Debounce is the quiet period after a file event before rereading
	// (default 100ms).
	Debounce time.Duration
	// RetryInterval is how soon a pod or namespace whose application
	// failed (enrolment error) is applied again (default 2s).
	RetryInterval time.Duration
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// LocalSource feeds the agent from a directory of manifests: namespace
// labels for every Namespace, and the Pods whose spec.nodeName is this
// node (pods in phase Succeeded or Failed, and pods without metadata.uid,
// are left out). A pod that disappears, leaves the node or terminates is
// deleted from the agent. A file that cannot be read or decoded is logged
// with its reason and its last good contents stay in effect.
//
// It reads Pods and Namespaces only: a file the controller rejects for
// another kind's sake still counts here.
type LocalSource struct {
	cfg LocalSourceConfig
	log *slog.Logger

	// mu guards everything below and is held while the sink is fed, so
	// that SyncPod never hands the agent an older view than a reload.
	mu         sync.Mutex
	files      map[string]*fileState
	namespaces map[string]map[string]string // applied to the sink
	pods       map[string]Pod               // applied to the sink, by uid
	retryNS    map[string]bool
	retryPods  map[string]bool
	loaded     bool

	watcher *manifestdir.Watcher
	cancel  context.CancelFunc
	done    chan struct{}
}

// fileState is what one file last contributed.
type fileState struct {
	hash   [sha256.Size]byte
	parsed bool      // hash holds the contents last parsed
	m      *manifest // last good contents; nil if never good
}

// NewLocalSource validates cfg; it does not touch the directory.
func NewLocalSource(cfg LocalSourceConfig) (*LocalSource, error) {
	switch {
	case cfg.Dir == "":
		return nil, errors.New("nodeagent: local source needs a directory")
	case cfg.NodeName == "":
		return nil, errors.New("nodeagent: local source needs the node name")
	case cfg.Sink == nil:
		return nil, errors.New("nodeagent: local source needs a sink")
	case cfg.Debounce < 0 || cfg.RetryInterval < 0:
		return nil, errors.New("nodeagent: negative local source interval")
	}
	if cfg.Debounce == 0 {
		cfg.Debounce = 100 * time.Millisecond
	}
	if cfg.RetryInterval == 0 {
		cfg.RetryInterval = 2 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &LocalSource{
		cfg:        cfg,
		log:        log.With("component", "local-source", "dir", cfg.Dir, "node", cfg.NodeName),
		files:      map[string]*fileState{},
		namespaces: map[string]map[string]string{},
		pods:       map[string]Pod{},
		retryNS:    map[string]bool{},
		retryPods:  map[string]bool{},
	}, nil
}

// Start reads the directory once, feeds the sink, and starts watching. It
// fails if the directory cannot be read; bad files do not fail it. ctx
// bounds the first load only.
func (s *LocalSource) Start(ctx context.Context) error {
	w, err := manifestdir.NewWatcher(s.cfg.Dir, s.cfg.Debounce, s.log)
	if err != nil {
		return fmt.Errorf("nodeagent: local source: %w", err)
	}
	s.watcher = w
	if err := s.reload(ctx); err != nil {
		_ = w.Close()
		return err
	}
	wctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.done = make(chan struct{})
	go s.watch(wctx)
	return nil
}

// Stop ends watching and waits for the watcher goroutine (and a reload in
// progress).
func (s *LocalSource) Stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	<-s.done
	_ = s.watcher.Close()
	s.cancel = nil
}

// Loaded reports whether the first load has been applied.
func (s *LocalSource) Loaded() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.loaded
}

// SyncPod implements PodSyncer: when the source knows pod uid on this
// node it hands the agent its current view (UpsertPod) and returns true;
// the error is the agent's, for a pod the source knows.
func (s *LocalSource) SyncPod(ctx context.Context, uid string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pods[uid]
	if !ok {
		return false, nil
	}
	return true, s.cfg.Sink.UpsertPod(ctx, p)
}

func (s *LocalSource) watch(ctx context.Context) {
	defer close(s.done)
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		s.watcher.Run(ctx)
	}()
	defer func() { <-watching }()
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.watcher.Changes():
			if err := s.reload(ctx); err != nil {
				s.log.Error("reload failed; keeping the last good state", "err", err)
			}
		case <-retry:
			retry = nil
			s.retry(ctx)
		}
		if retry == nil && s.pendingRetries() {
			retry = time.After(s.cfg.RetryInterval)
		}
	}
}

// reload rereads changed files and applies the difference to the sink.
func (s *LocalSource) reload(ctx context.Context) error {
	paths, err := manifestdir.Files(s.cfg.Dir)
	if err != nil {
		return fmt.Errorf("nodeagent: local source: scan: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[string]bool{}
	for _, p := range paths {
		seen[p] = true
		s.readFile(p)
	}
	for p := range s.files {
		if !seen[p] {
			delete(s.files, p)
		}
	}
	nss, pods := s.assemble()
	s.apply(ctx, nss, pods)
	s.loaded = true
	return nil
}

// readFile updates the state of one file; the caller holds s.mu.
func (s *LocalSource) readFile(path string) {
	st := s.files[path]
	if st == nil {
		st = &fileState{}
		s.files[path] = st
	}
	data, err := os.ReadFile(path)
	if err != nil {
		s.log.Warn("manifest unreadable; its last good contents stay in effect", "file", s.rel(path), "reason", err.Error())
		return
	}
	h := sha256.Sum256(data)
	if st.parsed && st.hash == h {
		return
	}
	st.hash, st.parsed = h, true
	m, err := parseManifest(data)
	if err != nil {
		s.log.Warn("manifest rejected; its last good contents stay in effect", "file", s.rel(path), "reason", err.Error())
		return
	}
	st.m = m
}

func (s *LocalSource) rel(p string) string {
	if r, err := filepath.Rel(s.cfg.Dir, p); err == nil {
		return r
	}
	return p
}

// assemble merges every file's good contents in file-name order (an
// object declared twice keeps its first declaration) into the namespaces'
// labels and this node's pods; the caller holds s.mu.
func (s *LocalSource) assemble() (map[string]map[string]string, map[string]Pod) {
	paths := make([]string, 0, len(s.files))
	for p := range s.files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	nss := map[string]map[string]string{}
	pods := map[string]Pod{}
	podKeys := map[string]bool{}
	for _, path := range paths {
		m := s.files[path].m
		if m == nil {
			continue
		}
		for _, ns := range m.namespaces {
			if _, dup := nss[ns.Name]; !dup {
				nss[ns.Name] = maps.Clone(ns.Labels)
			}
		}
		for i := range m.pods {
			p := &m.pods[i]
			key := p.Namespace + "/" + p.Name
			if podKeys[key] {
				continue
			}
			podKeys[key] = true
			if p.Spec.NodeName != s.cfg.NodeName || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
				continue
			}
			if p.UID == "" {
				s.log.Debug("pod without metadata.uid ignored: the CNI plugin could not be matched to it", "pod", key, "file", s.rel(path))
				continue
			}
			pods[string(p.UID)] = PodFromObject(p)
		}
	}
	return nss, pods
}

// PodFromObject returns the agent's view of a Kubernetes pod.
func PodFromObject(p *corev1.Pod) Pod {
	return Pod{
		UID:            string(p.UID),
		Name:           p.Name,
		Namespace:      p.Namespace,
		ServiceAccount: serviceAccount(p),
		Labels:         maps.Clone(p.Labels),
		IPs:            PodIPs(p),
	}
}

// PodIPs returns the pod's addresses from status.podIPs (status.podIP
// when the list is empty); unparsable entries are skipped.
func PodIPs(p *corev1.Pod) []netip.Addr {
	var out []netip.Addr
	add := func(s string) {
		if a, err := netip.ParseAddr(s); err == nil && !slices.Contains(out, a.Unmap()) {
			out = append(out, a.Unmap())
		}
	}
	for _, ip := range p.Status.PodIPs {
		add(ip.IP)
	}
	if len(out) == 0 && p.Status.PodIP != "" {
		add(p.Status.PodIP)
	}
	return out
}

func serviceAccount(p *corev1.Pod) string {
	if p.Spec.ServiceAccountName != "" {
		return p.Spec.ServiceAccountName
	}
	return "default"
}

// apply feeds the sink the difference between what it was given and what
// the files now say: departed pods first, then namespaces, then new or
// changed pods. Failures are logged and retried; the caller holds s.mu.
func (s *LocalSource) apply(ctx context.Context, nss map[string]map[string]string, pods map[string]Pod) {
	for uid, old := range s.pods {
		if _, ok := pods[uid]; ok {
			continue
		}
		delete(s.pods, uid)
		delete(s.retryPods, uid)
		if err := s.cfg.Sink.DeletePod(ctx, uid); err != nil {
			s.log.Warn("pod removal incomplete", "pod", old.Namespace+"/"+old.Name, "uid", uid, "err", err)
		}
	}
	for name, old := range s.namespaces {
		if _, ok := nss[name]; ok {
			continue
		}
		// Forgotten: its pods lose the namespace's labels.
		delete(s.namespaces, name)
		if old != nil || s.retryNS[name] {
			s.applyNamespace(ctx, name, nil)
		}
	}
	for name, labels := range nss {
		old, had := s.namespaces[name]
		if had && maps.Equal(old, labels) && !s.retryNS[name] {
			continue
		}
		s.namespaces[name] = labels
		s.applyNamespace(ctx, name, labels)
	}
	for uid, p := range pods {
		if old, ok := s.pods[uid]; ok && samePod(old, p) && !s.retryPods[uid] {
			continue
		}
		s.pods[uid] = p
		s.applyPod(ctx, p)
	}
}

func (s *LocalSource) applyNamespace(ctx context.Context, name string, labels map[string]string) {
	if err := s.cfg.Sink.SetNamespace(ctx, name, labels); err != nil {
		s.log.Warn("namespace change not fully applied; will retry", "namespace", name, "err", err)
		s.retryNS[name] = true
		return
	}
	delete(s.retryNS, name)
}

func (s *LocalSource) applyPod(ctx context.Context, p Pod) {
	if err := s.cfg.Sink.UpsertPod(ctx, p); err != nil {
		s.log.Warn("pod change not applied; will retry", "pod", p.Namespace+"/"+p.Name, "uid", p.UID, "err", err)
		s.retryPods[p.UID] = true
		return
	}
	delete(s.retryPods, p.UID)
}

// retry applies again what failed before.
func (s *LocalSource) retry(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name := range s.retryNS {
		s.applyNamespace(ctx, name, s.namespaces[name])
	}
	for uid := range s.retryPods {
		if p, ok := s.pods[uid]; ok {
			s.applyPod(ctx, p)
		} else {
			delete(s.retryPods, uid)
		}
	}
}

func (s *LocalSource) pendingRetries() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.retryNS) > 0 || len(s.retryPods) > 0
}

func samePod(a, b Pod) bool {
	return a.UID == b.UID && a.Name == b.Name && a.Namespace == b.Namespace &&
		a.ServiceAccount == b.ServiceAccount && maps.Equal(a.Labels, b.Labels) && slices.Equal(a.IPs, b.IPs)
}
