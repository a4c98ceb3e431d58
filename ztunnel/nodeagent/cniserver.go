package nodeagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/zmesh/zmesh/pkg/netns"
	"github.com/zmesh/zmesh/ztunnel/cniplugin"
)

// PodSyncer is the pod source as the CNI endpoint sees it (*LocalSource).
type PodSyncer interface {
	// SyncPod hands the agent the source's current view of pod uid
	// (UpsertPod) and reports whether the source knows the pod.
	SyncPod(ctx context.Context, uid string) (bool, error)
}

// RedirectChecker verifies the redirection in a pod namespace
// (*redirect.Redirector).
type RedirectChecker interface {
	Check(ns *os.File) error
}

// CNIServerConfig configures a CNIServer.
type CNIServerConfig struct {
	// Path of the unix socket; cniplugin.DefaultAgentSocket if empty. Its
	// directory is created if missing.
	Path string
	// Agent receives the pods. Required.
	Agent *Agent
	// Pods is the pod source. When nil the server relies on what the
	// agent already knows.
	Pods PodSyncer
	// Redirect, when set, lets CHECK verify the rules in the pod.
	Redirect RedirectChecker
	// PodWait bounds how long ADD waits for the pod source to learn a pod
	// it does not know yet (default 10s); then ADD fails.
	PodWait time.Duration
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// CNIServer is the node agent's endpoint for the CNI plugin: HTTP on a
// unix socket, one handler per CNI command (see package cniplugin).
type CNIServer struct {
	cfg CNIServerConfig
	log *slog.Logger

	mu      sync.Mutex
	started bool
	srv     *http.Server
	cancel  context.CancelFunc
	done    chan struct{}
}

// pollInterval is how often ADD asks the source again while it waits.
const pollInterval = 50 * time.Millisecond

// NewCNIServer validates cfg.
func NewCNIServer(cfg CNIServerConfig) (*CNIServer, error) {
	if cfg.Agent == nil {
		return nil, errors.New("nodeagent: CNI server needs an Agent")
	}
	if cfg.Path == "" {
		cfg.Path = cniplugin.DefaultAgentSocket
	}
	if cfg.PodWait < 0 {
		return nil, errors.New("nodeagent: negative PodWait")
	}
	if cfg.PodWait == 0 {
		cfg.PodWait = 10 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &CNIServer{cfg: cfg, log: log.With("component", "cni-server", "path", cfg.Path)}, nil
}

// Start creates the socket (replacing a stale one nobody answers on) and
// serves. It may be called once.
func (s *CNIServer) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("nodeagent: CNI server already started")
	}
	if err := os.MkdirAll(filepath.Dir(s.cfg.Path), 0o755); err != nil {
		return fmt.Errorf("nodeagent: CNI socket directory: %w", err)
	}
	if err := removeStaleUnixSocket(s.cfg.Path); err != nil {
		return err
	}
	ln, err := net.Listen("unix", s.cfg.Path)
	if err != nil {
		return fmt.Errorf("nodeagent: CNI socket: %w", err)
	}
	if err := os.Chmod(s.cfg.Path, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("nodeagent: CNI socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+cniplugin.PathAdd, s.handleAdd)
	mux.HandleFunc("POST "+cniplugin.PathDel, s.handleDel)
	mux.HandleFunc("POST "+cniplugin.PathCheck, s.handleCheck)
	ctx, cancel := context.WithCancel(context.Background())
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	done := make(chan struct{})
	s.srv, s.cancel, s.done, s.started = srv, cancel, done, true
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("CNI server stopped", "err", err)
		}
	}()
	s.log.Info("CNI server listening")
	return nil
}

// Stop cancels requests in flight (an ADD still waiting fails), closes the
// socket and waits for the handlers and the serving goroutine.
func (s *CNIServer) Stop() {
	s.mu.Lock()
	srv, cancel, done := s.srv, s.cancel, s.done
	s.srv = nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	cancel()
	ctx, stop := context.WithTimeout(context.Background(), 30*time.Second)
	defer stop()
	if err := srv.Shutdown(ctx); err != nil {
		_ = srv.Close()
	}
	<-done
}

// removeStaleUnixSocket deletes a leftover socket file unless a server
// still answers on it.
func removeStaleUnixSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("nodeagent: stat socket: %w", err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("nodeagent: %s exists and is not a socket", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("nodeagent: another server is listening on %s", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("nodeagent: remove stale socket: %w", err)
	}
	return nil
}

// decode reads and validates a PodRequest; netns is required for ADD and
// CHECK.
func decode(r *http.Request, needNetns bool) (*cniplugin.PodRequest, error) {
	var req cniplugin.PodRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		return nil, fmt.Errorf("bad request body: %w", err)
	}
	if req.UID == "" {
		return nil, errors.New("request lacks the pod uid")
	}
	if needNetns && req.Netns == "" {
		return nil, errors.New("request lacks the pod network namespace")
	}
	return &req, nil
}

func reply(w http.ResponseWriter, status int, resp cniplugin.Response) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(resp)
}

func (s *CNIServer) handleAdd(w http.ResponseWriter, r *http.Request) {
	req, err := decode(r, true)
	if err != nil {
		reply(w, http.StatusBadRequest, cniplugin.Response{Error: err.Error()})
		return
	}
	ctx := r.Context()
	log := s.log.With("pod", req.Namespace+"/"+req.Name, "uid", req.UID, "netns", req.Netns, "containerID", req.ContainerID, "ips", req.IPs)
	// A new sandbox for a pod the agent holds with another namespace (the
	// runtime recreated it without a DEL): start over so the new namespace
	// is captured.
	if st, ok := s.cfg.Agent.Status(req.UID); ok && st.NetnsPath != "" && st.NetnsPath != req.Netns {
		log.Info("pod sandbox replaced; releasing the old network namespace", "old", st.NetnsPath)
		if err := s.cfg.Agent.DeletePod(ctx, req.UID); err != nil {
			log.Warn("releasing the old sandbox failed", "err", err)
		}
	}
	if err := s.waitForPod(ctx, req.UID); err != nil {
		log.Warn("CNI ADD refused", "err", err)
		reply(w, http.StatusServiceUnavailable, cniplugin.Response{Error: fmt.Sprintf("pod %s/%s (uid %s): %v", req.Namespace, req.Name, req.UID, err)})
		return
	}
	if err := s.cfg.Agent.SetNetns(ctx, req.UID, req.Netns); err != nil {
		log.Error("CNI ADD failed: pod cannot be captured", "err", err)
		reply(w, http.StatusInternalServerError, cniplugin.Response{Error: err.Error()})
		return
	}
	enrolled := s.cfg.Agent.IsEnrolled(req.UID)
	log.Info("CNI ADD", "enrolled", enrolled)
	reply(w, http.StatusOK, cniplugin.Response{Enrolled: enrolled})
}

// errPodUnknown: the pod source did not learn the pod in time.
var errPodUnknown = errors.New("pod not known to the node agent's pod source")

// waitForPod returns once the agent holds the source's view of uid, or
// errPodUnknown after PodWait.
func (s *CNIServer) waitForPod(ctx context.Context, uid string) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.PodWait)
	defer cancel()
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		known, err := s.syncPod(ctx, uid)
		if err != nil {
			return err
		}
		if known {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w after %v", errPodUnknown, s.cfg.PodWait)
		case <-t.C:
		}
	}
}

func (s *CNIServer) syncPod(ctx context.Context, uid string) (bool, error) {
	if s.cfg.Pods != nil {
		known, err := s.cfg.Pods.SyncPod(ctx, uid)
		if err != nil {
			return false, fmt.Errorf("pod source: %w", err)
		}
		return known, nil
	}
	st, _ := s.cfg.Agent.Status(uid)
	return st.Known, nil
}

func (s *CNIServer) handleDel(w http.ResponseWriter, r *http.Request) {
	req, err := decode(r, false)
	if err != nil {
		reply(w, http.StatusBadRequest, cniplugin.Response{Error: err.Error()})
		return
	}
	// Errors are logged, not returned: the sandbox is going away whatever
	// we say, and its namespace may already be gone.
	if err := s.cfg.Agent.DeletePod(r.Context(), req.UID); err != nil {
		s.log.Warn("CNI DEL: unenrolment incomplete", "pod", req.Namespace+"/"+req.Name, "uid", req.UID, "err", err)
	}
	s.log.Info("CNI DEL", "pod", req.Namespace+"/"+req.Name, "uid", req.UID)
	reply(w, http.StatusOK, cniplugin.Response{})
}

func (s *CNIServer) handleCheck(w http.ResponseWriter, r *http.Request) {
	req, err := decode(r, true)
	if err != nil {
		reply(w, http.StatusBadRequest, cniplugin.Response{Error: err.Error()})
		return
	}
	if _, err := s.syncPod(r.Context(), req.UID); err != nil {
		reply(w, http.StatusServiceUnavailable, cniplugin.Response{Error: err.Error()})
		return
	}
	st, _ := s.cfg.Agent.Status(req.UID)
	if err := s.check(req, st); err != nil {
		s.log.Warn("CNI CHECK failed", "pod", req.Namespace+"/"+req.Name, "uid", req.UID, "err", err)
		status := http.StatusInternalServerError
		if errors.Is(err, errPodUnknown) {
			status = http.StatusServiceUnavailable
		}
		reply(w, status, cniplugin.Response{Enrolled: st.Enrolled, Error: err.Error()})
		return
	}
	reply(w, http.StatusOK, cniplugin.Response{Enrolled: st.Enrolled})
}

// check compares the pod's state with what its labels ask for.
func (s *CNIServer) check(req *cniplugin.PodRequest, st PodStatus) error {
	switch {
	case !st.Known:
		return errPodUnknown
	case st.Wanted && !st.Enrolled:
		return errors.New("pod belongs in the mesh but is not captured")
	case !st.Wanted && st.Enrolled:
		return errors.New("pod is captured but its labels take it out of the mesh")
	case !st.Enrolled:
		return nil
	case st.NetnsPath != req.Netns:
		return fmt.Errorf("pod captured in network namespace %s, not %s", st.NetnsPath, req.Netns)
	case s.cfg.Redirect == nil:
		return nil
	}
	ns, err := netns.Open(req.Netns)
	if err != nil {
		return fmt.Errorf("check redirection: %w", err)
	}
	defer ns.Close()
	if err := s.cfg.Redirect.Check(ns); err != nil {
		return fmt.Errorf("check redirection: %w", err)
	}
	return nil
}
