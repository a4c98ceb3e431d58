package zds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zmesh/zmesh/pkg/netns"
	"github.com/zmesh/zmesh/pkg/zdsapi"
)

// Errors returned by Server methods.
var (
	// ErrStopped: the server was stopped.
	ErrStopped = errors.New("zds: server stopped")
	// ErrDisconnected: ztunnel went away (or was replaced) before it
	// acknowledged the request. The snapshot was updated all the same and
	// the next ztunnel connection replays it.
	ErrDisconnected = errors.New("zds: ztunnel disconnected before acknowledging")
	// ErrAckTimeout: ztunnel did not acknowledge in time; the server closes
	// that connection so that a late Ack cannot be taken for the next one.
	ErrAckTimeout = errors.New("zds: timed out waiting for ztunnel's ack")
)

// AckError is ztunnel's non-empty Ack error for a request.
type AckError struct {
	// Message is the error text ztunnel sent.
	Message string
}

func (e *AckError) Error() string { return "zds: ztunnel rejected the request: " + e.Message }

// ServerConfig configures the node agent side.
type ServerConfig struct {
	// Path of the SOCK_SEQPACKET socket; empty means DefaultSocketPath. Its
	// directory is created if missing.
	Path string
	// HelloTimeout bounds the wait for ZdsHello after ztunnel connects
	// (default 5s).
	HelloTimeout time.Duration
	// AckTimeout bounds the wait for each Ack (default 5s).
	AckTimeout time.Duration
	// CallTimeout bounds how long AddPod and DelPod wait in total, queueing
	// included, when their context has no earlier deadline (default 30s).
	CallTimeout time.Duration
	// Logger receives connection events; nil means slog.Default().
	Logger *slog.Logger
}

// ServerStats are counters since the server was created.
type ServerStats struct {
	// Connections is the number of ztunnel connections accepted.
	Connections uint64
	// Snapshots is the number of completed snapshot replays.
	Snapshots uint64
	// AckErrors is the number of Acks that carried an error.
	AckErrors uint64
}

// Server is the node agent's side of ZDS. See the package comment.
type Server struct {
	cfg ServerConfig
	log *slog.Logger

	mu      sync.Mutex
	pods    map[string]*podEntry
	gen     uint64     // bumped by every AddPod/DelPod
	sess    *session   // the current ztunnel connection, if any
	pending []*request // live requests not yet sent, oldest first
	ln      *net.UnixListener
	state   int // stateNew, stateStarted, stateStopped
	quit    chan struct{}

	wg sync.WaitGroup

	connections atomic.Uint64
	snapshots   atomic.Uint64
	ackErrors   atomic.Uint64
}

const (
	stateNew = iota
	stateStarted
	stateStopped
)

// podEntry is a pod in the snapshot; ns is the server's own duplicate.
type podEntry struct {
	uid  string
	info *zdsapi.WorkloadInfo
	ns   *os.File
	gen  uint64
}

// request is a live AddPod or DelPod waiting to reach ztunnel. ns (adds
// only) is the request's own descriptor duplicate, closed by finish.
type request struct {
	gen  uint64
	uid  string
	add  bool
	info *zdsapi.WorkloadInfo
	ns   *os.File
	done chan error // buffered: finish never blocks
}

// finish closes the request's descriptor and delivers its outcome.
func (r *request) finish(err error) {
	if r.ns != nil {
		r.ns.Close()
		r.ns = nil
	}
	r.done <- err
}

// NewServer validates cfg and returns a stopped Server; Start listens.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Path == "" {
		cfg.Path = DefaultSocketPath
	}
	if cfg.HelloTimeout < 0 || cfg.AckTimeout < 0 || cfg.CallTimeout < 0 {
		return nil, errors.New("zds: negative timeout")
	}
	if cfg.HelloTimeout == 0 {
		cfg.HelloTimeout = 5 * time.Second
	}
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = 5 * time.Second
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = 30 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Server{
		cfg:  cfg,
		log:  log.With("component", "zds-server", "path", cfg.Path),
		pods: map[string]*podEntry{},
		quit: make(chan struct{}),
	}, nil
}

// Start creates the socket (replacing a stale socket file nobody listens on)
// and begins accepting ztunnel connections. Pods added before Start are
// replayed to the first ztunnel.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != stateNew {
		return errors.New("zds: server already started")
	}
	if err := os.MkdirAll(filepath.Dir(s.cfg.Path), 0o755); err != nil {
		return fmt.Errorf("zds: socket directory: %w", err)
	}
	if err := removeStaleSocket(s.cfg.Path); err != nil {
		return err
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: s.cfg.Path, Net: "unixpacket"})
	if err != nil {
		return fmt.Errorf("zds: listen: %w", err)
	}
	s.ln = ln
	s.state = stateStarted
	s.wg.Add(1)
	go s.acceptLoop()
	return nil
}

// removeStaleSocket deletes a leftover socket file unless a server still
// answers on it.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("zds: stat socket: %w", err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("zds: %s exists and is not a socket", path)
	}
	if c, err := net.DialTimeout("unixpacket", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("zds: another server is listening on %s", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("zds: remove stale socket: %w", err)
	}
	return nil
}

// Stop closes the socket and the current connection, fails waiting calls
// with ErrStopped, waits for every goroutine the server started, and closes
// the server's namespace duplicates. It is safe to call more than once.
func (s *Server) Stop() {
	s.mu.Lock()
	if s.state == stateStopped {
		s.mu.Unlock()
		return
	}
	s.state = stateStopped
	close(s.quit)
	sess := s.sess
	s.sess = nil
	pending := s.pending
	s.pending = nil
	for uid, p := range s.pods {
		p.ns.Close()
		delete(s.pods, uid)
	}
	ln := s.ln
	s.mu.Unlock()

	for _, r := range pending {
		r.finish(ErrStopped)
	}
	if ln != nil {
		_ = ln.Close() // also unlinks the socket file
	}
	if sess != nil {
		sess.close()
	}
	s.wg.Wait()
}

// Stats returns the server's counters.
func (s *Server) Stats() ServerStats {
	return ServerStats{
		Connections: s.connections.Load(),
		Snapshots:   s.snapshots.Load(),
		AckErrors:   s.ackErrors.Load(),
	}
}

// Connected reports whether a ztunnel connection is open.
func (s *Server) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sess != nil
}

// AddPod records (or replaces) pod uid in the snapshot and, when ztunnel is
// connected, sends it an "add" carrying the namespace and waits for the Ack.
// It returns nil when ztunnel acknowledged, or when no ztunnel is connected
// (the pod is replayed on connect); an *AckError with ztunnel's message;
// ErrDisconnected or ErrAckTimeout (wrapped) when the connection failed
// first; or the context's error. In every case but a validation error the
// pod stays in the snapshot.
//
// netnsFile must be the pod's network namespace. AddPod keeps its own
// duplicates; the caller still owns netnsFile and closes it when it likes.
func (s *Server) AddPod(ctx context.Context, uid string, info *zdsapi.WorkloadInfo, netnsFile *os.File) error {
	if uid == "" {
		return errors.New("zds: AddPod: empty uid")
	}
	if err := netns.Verify(netnsFile); err != nil {
		return fmt.Errorf("zds: AddPod %s: %w", uid, err)
	}
	keep, err := netns.Dup(netnsFile)
	if err != nil {
		return fmt.Errorf("zds: AddPod %s: %w", uid, err)
	}
	send, err := netns.Dup(netnsFile)
	if err != nil {
		keep.Close()
		return fmt.Errorf("zds: AddPod %s: %w", uid, err)
	}
	return s.call(ctx, &request{uid: uid, add: true, info: info, ns: send}, keep)
}

// DelPod removes pod uid from the snapshot and, when ztunnel is connected,
// sends it a "del" and waits for the Ack. Results are as for AddPod.
func (s *Server) DelPod(ctx context.Context, uid string) error {
	if uid == "" {
		return errors.New("zds: DelPod: empty uid")
	}
	return s.call(ctx, &request{uid: uid}, nil)
}

// call updates the snapshot for r (keep is the snapshot's duplicate for an
// add) and, with a ztunnel connected, queues r and waits for its outcome.
func (s *Server) call(ctx context.Context, r *request, keep *os.File) error {
	r.done = make(chan error, 1)
	s.mu.Lock()
	if s.state == stateStopped {
		s.mu.Unlock()
		if keep != nil {
			keep.Close()
		}
		r.finish(nil)
		return ErrStopped
	}
	s.gen++
	r.gen = s.gen
	if old := s.pods[r.uid]; old != nil {
		old.ns.Close()
		delete(s.pods, r.uid)
	}
	if r.add {
		s.pods[r.uid] = &podEntry{uid: r.uid, info: r.info, ns: keep, gen: r.gen}
	}
	sess := s.sess
	if sess == nil {
		// No ztunnel: the snapshot is all there is to update.
		s.mu.Unlock()
		r.finish(nil)
		return nil
	}
	s.pending = append(s.pending, r)
	sess.wakeUp()
	s.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
	defer cancel()
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		// The request stays queued; the session closes its descriptor.
		return fmt.Errorf("zds: waiting for ztunnel: %w", ctx.Err())
	}
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		conn, err := s.ln.AcceptUnix()
		if err != nil {
			select {
			case <-s.quit:
				return
			default:
			}
			s.log.Error("accept failed", "err", err)
			select {
			case <-s.quit:
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		s.connections.Add(1)
		sess := newSession(s, conn)
		s.mu.Lock()
		if s.state == stateStopped {
			s.mu.Unlock()
			_ = conn.Close()
			return
		}
		old := s.sess
		s.sess = sess
		s.wg.Add(1)
		s.mu.Unlock()
		if old != nil {
			s.log.Info("new ztunnel connection replaces the previous one")
			old.close()
		}
		go sess.run()
	}
}

// snapshot returns the pods to replay, oldest first, each with a fresh
// descriptor duplicate the caller closes, and the generation they reflect.
// It returns ok=false when sess is no longer the current session.
func (s *Server) snapshot(sess *session) (pods []*podEntry, gen uint64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sess != sess {
		return nil, 0, false
	}
	for _, p := range s.pods {
		dup, err := netns.Dup(p.ns)
		if err != nil {
			s.log.Error("cannot duplicate pod namespace for replay", "uid", p.uid, "err", err)
			continue
		}
		pods = append(pods, &podEntry{uid: p.uid, info: p.info, ns: dup, gen: p.gen})
	}
	sort.Slice(pods, func(i, j int) bool { return pods[i].gen < pods[j].gen })
	return pods, s.gen, true
}

// next pops the oldest pending request if sess is still current.
func (s *Server) next(sess *session) (r *request, current bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sess != sess {
		return nil, false
	}
	if len(s.pending) == 0 {
		return nil, true
	}
	r = s.pending[0]
	s.pending[0] = nil
	s.pending = s.pending[1:]
	return r, true
}

// detach forgets sess if it is still current and fails the queued requests;
// requests queued behind a replaced session stay for its successor.
func (s *Server) detach(sess *session) {
	s.mu.Lock()
	if s.sess != sess {
		s.mu.Unlock()
		return
	}
	s.sess = nil
	pending := s.pending
	s.pending = nil
	s.mu.Unlock()
	for _, r := range pending {
		r.finish(ErrDisconnected)
	}
}
