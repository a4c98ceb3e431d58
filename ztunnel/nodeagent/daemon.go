package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/zmesh/zmesh/pkg/zds"
	"github.com/zmesh/zmesh/ztunnel/cniplugin"
	"github.com/zmesh/zmesh/ztunnel/redirect"
)

// DaemonConfig configures the node agent process.
type DaemonConfig struct {
	// NodeName is this node's Kubernetes name. Required.
	NodeName string
	// ConfigDir is the controller's manifest directory, the pod source in
	// local mode. Required unless Source is set.
	ConfigDir string
	// Source, when set, builds the pod source feeding agent instead of the
	// local one (kubesource on Kubernetes). NewDaemon calls it once.
	Source func(agent *Agent) (Source, error)
	// StateDir is where pods' network namespace paths are persisted so that
	// a restarted agent finds them (see NetnsStore); "" disables it.
	StateDir string
	// Finder, when set, searches the host for the network namespaces of
	// pods the state directory does not account for after a restart.
	Finder *NetnsFinder
	// ZDSSocket is where ztunnel connects; zds.DefaultSocketPath if empty.
	ZDSSocket string
	// CNISocket is where the CNI plugin calls; cniplugin.DefaultAgentSocket
	// if empty.
	CNISocket string
	// ReadyAddr serves GET /healthz/ready; DefaultReadyAddr if empty.
	ReadyAddr string
	// DNSCapture and IPv6 select what the in-pod redirection captures.
	DNSCapture, IPv6 bool
	// PodWait bounds how long a CNI ADD waits for the pod source (default
	// 10s).
	PodWait time.Duration
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Source is a pod source the daemon runs (*LocalSource, kubesource).
type Source interface {
	PodSyncer
	// Start applies the source's first complete view (namespaces, then
	// this node's pods) to the agent before returning, then follows
	// changes until Stop. ctx bounds the start only.
	Start(ctx context.Context) error
	// Stop ends following and waits for the source's goroutines.
	Stop()
}

// ChangeObserver is implemented by sources that want to hear of
// enrolment changes (kubesource writes the pod annotation). PodChanged is
// called synchronously by the agent (see Config.OnChange): it must not
// block on I/O.
type ChangeObserver interface {
	PodChanged(p Pod, enrolled bool)
}

// RestoreObserver is implemented by sources that act once the daemon has
// restored the running pods after a start (kubesource reconciles
// annotations only then, so that a restart does not flap them).
type RestoreObserver interface {
	Restored()
}

// DefaultReadyAddr is the readiness address when none is configured.
const DefaultReadyAddr = ":15022"

// Daemon is a running node agent: ZDS server, redirector, agent, CNI
// endpoint, local pod source and readiness endpoint. Create it with
// NewDaemon, then Start; Stop shuts everything down and waits.
type Daemon struct {
	cfg    DaemonConfig
	log    *slog.Logger
	zds    *zds.Server
	agent  *Agent
	source Source
	cni    *CNIServer
	store  *NetnsStore  // nil when StateDir is ""
	finder *NetnsFinder // nil: no search

	mu      sync.Mutex
	ready   *http.Server
	readyLn net.Listener
	done    chan struct{}
	started bool
	lost    []LostPod
}

// NewDaemon validates cfg and builds the parts; it performs no I/O.
func NewDaemon(cfg DaemonConfig) (*Daemon, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("nodeagent: node name is required")
	}
	if cfg.ConfigDir == "" && cfg.Source == nil {
		return nil, errors.New("nodeagent: a config directory or a pod source is required")
	}
	if cfg.ZDSSocket == "" {
		cfg.ZDSSocket = zds.DefaultSocketPath
	}
	if cfg.CNISocket == "" {
		cfg.CNISocket = cniplugin.DefaultAgentSocket
	}
	if cfg.ReadyAddr == "" {
		cfg.ReadyAddr = DefaultReadyAddr
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger
	srv, err := zds.NewServer(zds.ServerConfig{Path: cfg.ZDSSocket, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("nodeagent: %w", err)
	}
	rd, err := redirect.New(redirect.Config{DNSCapture: cfg.DNSCapture, IPv6: cfg.IPv6, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("nodeagent: %w", err)
	}
	d := &Daemon{cfg: cfg, log: log, zds: srv, finder: cfg.Finder}
	if cfg.StateDir != "" {
		if d.store, err = NewNetnsStore(cfg.StateDir); err != nil {
			return nil, err
		}
	}
	// d.source is set below, before anything can enrol a pod.
	onChange := func(p Pod, enrolled bool) {
		if o, ok := d.source.(ChangeObserver); ok {
			o.PodChanged(p, enrolled)
		}
	}
	if d.agent, err = New(Config{Redirector: rd, Workloads: srv, Store: d.store, OnChange: onChange, Logger: log}); err != nil {
		return nil, err
	}
	if cfg.Source != nil {
		d.source, err = cfg.Source(d.agent)
		if err == nil && d.source == nil {
			err = errors.New("nodeagent: pod source constructor returned nothing")
		}
	} else {
		d.source, err = NewLocalSource(LocalSourceConfig{Dir: cfg.ConfigDir, NodeName: cfg.NodeName, Sink: d.agent, Logger: log})
	}
	if err != nil {
		return nil, err
	}
	if d.cni, err = NewCNIServer(CNIServerConfig{Path: cfg.CNISocket, Agent: d.agent, Pods: d.source, Redirect: rd, PodWait: cfg.PodWait, Logger: log}); err != nil {
		return nil, err
	}
	return d, nil
}

// Lost returns the pods the last Start could not restore (see LostPod).
func (d *Daemon) Lost() []LostPod {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]LostPod(nil), d.lost...)
}

// Agent returns the daemon's agent.
func (d *Daemon) Agent() *Agent { return d.agent }

// Start brings the parts up in order: the pod source's first complete
// view, the restoration of pods already running (see restorePods), the
// ZDS socket, the CNI endpoint, then readiness. The ZDS socket opens only
// once every restored pod is in the snapshot, so a ztunnel reconnecting to
// a restarted agent never receives a snapshot that lacks them (and drops
// them). ctx bounds the start only. On error what was started is stopped.
func (d *Daemon) Start(ctx context.Context) (err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.started {
		return errors.New("nodeagent: daemon already started")
	}
	d.started = true
	var stops []func()
	defer func() {
		if err != nil {
			for i := len(stops) - 1; i >= 0; i-- {
				stops[i]()
			}
		}
	}()
	// Stopping the ZDS server also releases the namespaces the restore put
	// in its snapshot, so it is stopped on any failure.
	stops = append(stops, d.zds.Stop)
	if err := d.source.Start(ctx); err != nil {
		return err
	}
	stops = append(stops, d.source.Stop)
	d.lost = d.restorePods(ctx)
	if o, ok := d.source.(RestoreObserver); ok {
		o.Restored()
	}
	if err := d.zds.Start(); err != nil {
		return fmt.Errorf("nodeagent: %w", err)
	}
	if err := d.cni.Start(); err != nil {
		return err
	}
	stops = append(stops, d.cni.Stop)
	ln, err := net.Listen("tcp", d.cfg.ReadyAddr)
	if err != nil {
		return fmt.Errorf("nodeagent: readiness: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz/ready", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ready\n"))
	})
	ready := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	d.ready, d.readyLn, d.done = ready, ln, done
	go func() {
		defer close(done)
		if err := ready.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("readiness server stopped", "err", err)
		}
	}()
	d.log.Info("node agent started", "node", d.cfg.NodeName, "zds", d.cfg.ZDSSocket, "cni", d.cfg.CNISocket, "ready", ln.Addr().String())
	return nil
}

// ReadyAddr returns the readiness listener's address (nil before Start).
func (d *Daemon) ReadyAddr() net.Addr {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.readyLn == nil {
		return nil
	}
	return d.readyLn.Addr()
}

// Stop shuts down in reverse order and waits for every goroutine. Pods
// keep the redirection rules in their namespaces and their state records,
// so that a restarted agent restores them (see Start).
func (d *Daemon) Stop() {
	d.mu.Lock()
	ready, done := d.ready, d.done
	d.ready = nil
	d.mu.Unlock()
	if ready == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ready.Shutdown(ctx); err != nil {
		_ = ready.Close()
	}
	<-done
	d.cni.Stop()
	d.source.Stop()
	d.zds.Stop()
	d.log.Info("node agent stopped")
}

// Run starts a daemon, runs until ctx ends, then stops it.
func Run(ctx context.Context, cfg DaemonConfig) error {
	d, err := NewDaemon(cfg)
	if err != nil {
		return err
	}
	if err := d.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	d.Stop()
	return nil
}
