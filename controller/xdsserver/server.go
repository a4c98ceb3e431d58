package xdsserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/zmesh/zmesh/controller/auth"
)

// Server is the delta ADS server. Create it with New, register it on a
// grpc.Server with Register, then Start it; Stop ends every stream.
// Update, Upsert and Delete may be called at any time, from any goroutine,
// including before Start (the state is then served to the first clients).
type Server struct {
	log     *slog.Logger
	authn   auth.Authenticator
	metrics *metrics
	store   *store
	deb     *debouncer
	maxKeys int // Options.MaxKeys

	ctx    context.Context // cancelled by Stop; parent of every stream
	cancel context.CancelFunc
	wg     sync.WaitGroup // the debouncer, stream handlers and their receivers

	mu      sync.Mutex // guards state, streams and nextID
	state   int
	streams map[*stream]struct{}
	nextID  uint64
}

const (
	stateNew = iota
	stateStarted
	stateStopped
)

var _ discoveryv3.AggregatedDiscoveryServiceServer = (*Server)(nil)

// New validates opts and builds a stopped Server, registering its metrics.
func New(opts Options) (*Server, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(opts.Registry)
	if err != nil {
		return nil, fmt.Errorf("xdsserver: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		log:     log,
		authn:   opts.Authenticator,
		metrics: m,
		store:   newStore(),
		maxKeys: opts.MaxKeys,
		ctx:     ctx,
		cancel:  cancel,
		streams: make(map[*stream]struct{}),
	}
	s.deb = newDebouncer(opts.DebounceQuiet, opts.DebounceMax, s.broadcast)
	return s, nil
}

// Register adds the ADS service to g. Call it before g serves.
func (s *Server) Register(g grpc.ServiceRegistrar) {
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, s)
}

// Start begins pushing changes. Streams arriving before Start, or after
// Stop, are refused with Unavailable.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != stateNew {
		return errors.New("xdsserver: Start called twice or after Stop")
	}
	s.state = stateStarted
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.deb.run(s.ctx)
	}()
	return nil
}

// Stop ends every stream (handlers return Unavailable) and waits for the
// goroutines the server runs. A handler blocked sending to a client that
// stopped reading returns only when gRPC gives up on that transport
// (keepalive, or grpc.Server.Stop). Stop is idempotent.
func (s *Server) Stop() {
	s.mu.Lock()
	s.state = stateStopped
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
}

// Update replaces the full set of resources of typeURL. Only resources whose
// encoding or aliases changed, and those no longer present, are pushed. It
// returns an error, and changes nothing, if a resource is invalid (empty or
// duplicate name, nil body, body type not matching typeURL).
func (s *Server) Update(typeURL string, resources []Resource) error {
	changed, err := s.store.update(typeURL, resources)
	if err != nil {
		return fmt.Errorf("xdsserver: %w", err)
	}
	s.deb.add(typeURL, changed)
	return nil
}

// Upsert adds or replaces resources of typeURL, leaving the others as they
// are. Cheaper than Update when the caller knows what changed.
func (s *Server) Upsert(typeURL string, resources ...Resource) error {
	changed, err := s.store.upsert(typeURL, resources)
	if err != nil {
		return fmt.Errorf("xdsserver: %w", err)
	}
	s.deb.add(typeURL, changed)
	return nil
}

// Delete removes the named resources of typeURL; unknown names are ignored.
func (s *Server) Delete(typeURL string, names ...string) {
	s.deb.add(typeURL, s.store.remove(typeURL, names))
}

// StreamAggregatedResources is not served: the workload API is delta only.
func (s *Server) StreamAggregatedResources(discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	return status.Error(codes.Unimplemented, "state-of-the-world ADS is not supported; use DeltaAggregatedResources")
}

// DeltaAggregatedResources serves one delta ADS stream.
func (s *Server) DeltaAggregatedResources(gs discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	caller, err := s.authn.Authenticate(gs.Context())
	if err != nil {
		s.log.Warn("xds stream refused", "reason", err)
		return status.Error(codes.Unauthenticated, "authentication failed")
	}
	st, err := s.register(gs, caller)
	if err != nil {
		return err
	}
	defer s.unregister(st)
	return st.run()
}

func (s *Server) register(gs discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer, caller auth.Caller) (*stream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != stateStarted {
		return nil, status.Error(codes.Unavailable, "xds server is not running")
	}
	s.nextID++
	st := newStream(s, gs, caller, s.nextID)
	s.streams[st] = struct{}{}
	s.wg.Add(1) // the handler itself; Done in unregister
	s.metrics.connected.Inc()
	return st, nil
}

func (s *Server) unregister(st *stream) {
	s.mu.Lock()
	delete(s.streams, st)
	s.mu.Unlock()
	s.metrics.connected.Dec()
	s.wg.Done()
}

// broadcast hands a debounced batch of changes to every stream.
func (s *Server) broadcast(cs changeSet) {
	s.mu.Lock()
	streams := make([]*stream, 0, len(s.streams))
	for st := range s.streams {
		streams = append(streams, st)
	}
	s.mu.Unlock()
	for _, st := range streams {
		st.changed(cs)
	}
}
