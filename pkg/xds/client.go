package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Client follows the configured types over one delta ADS stream at a time.
// New builds it, Start connects (in the background), Stop disconnects and
// waits. Subscribe, Unsubscribe and Synced are safe from any goroutine.
type Client struct {
	cfg Config
	log *slog.Logger

	// Lock order: handlerMu, then session.sendMu, then mu.
	handlerMu sync.Mutex // serialises Handler calls and the state updates that follow them

	mu      sync.Mutex            // guards types' mutable fields, cur, started, stopped
	types   map[string]*typeState // fixed after New; fields guarded by mu
	cur     *session              // the live stream, nil while disconnected
	started bool
	stopped bool

	cancel context.CancelFunc // set by Start
	conn   *grpc.ClientConn   // set by Start, closed by Stop
	wg     sync.WaitGroup
}

// held is a resource the client has applied.
type held struct {
	version string
	aliases []string
}

// typeState is the client's knowledge of one type; guarded by Client.mu.
type typeState struct {
	cfg        TypeConfig
	held       map[string]held     // by real name
	keys       map[string]struct{} // on-demand subscriptions
	synced     chan struct{}       // closed after the first applied response
	syncedDone bool
}

// New validates cfg and builds a Client; nothing is dialed until Start.
func New(cfg Config) (*Client, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.Backoff.Initial == 0 {
		cfg.Backoff.Initial = defaultBackoffInitial
	}
	if cfg.Backoff.Max == 0 {
		cfg.Backoff.Max = defaultBackoffMax
	}
	if cfg.Backoff.Max < cfg.Backoff.Initial {
		cfg.Backoff.Max = cfg.Backoff.Initial
	}
	if cfg.MaxRecvMsgSize == 0 {
		cfg.MaxRecvMsgSize = 256 << 20
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{cfg: cfg, log: log.With("xds_server", cfg.Address), types: make(map[string]*typeState)}
	for _, t := range cfg.Types {
		c.types[t.TypeURL] = &typeState{
			cfg:    t,
			held:   make(map[string]held),
			keys:   make(map[string]struct{}),
			synced: make(chan struct{}),
		}
	}
	return c, nil
}

// Start dials and keeps a stream open until Stop.
func (c *Client) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started || c.stopped {
		return errors.New("xds: Start called twice or after Stop")
	}
	// gRPC's own reconnect backoff (1s base, up to 2 minutes) would
	// otherwise sit under ours; align it. Caller options come later and win.
	opts := append([]grpc.DialOption{
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  c.cfg.Backoff.Initial,
				Multiplier: 2,
				Jitter:     0.2,
				MaxDelay:   c.cfg.Backoff.Max,
			},
			MinConnectTimeout: 5 * time.Second,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(c.cfg.MaxRecvMsgSize)),
		grpc.WithKeepaliveParams(ControllerKeepalive),
	}, c.cfg.DialOptions...)
	conn, err := grpc.NewClient(c.cfg.Address, opts...)
	if err != nil {
		return fmt.Errorf("xds: creating client for %s: %w", c.cfg.Address, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.started, c.conn, c.cancel = true, conn, cancel
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.run(ctx, discoveryv3.NewAggregatedDiscoveryServiceClient(conn))
	}()
	return nil
}

// Stop closes the stream and the connection and waits for the client's
// goroutines. Idempotent; a Client cannot be restarted.
func (c *Client) Stop() {
	c.mu.Lock()
	c.stopped = true
	cancel, conn := c.cancel, c.conn
	c.cancel, c.conn = nil, nil
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	c.wg.Wait()
	if conn != nil {
		_ = conn.Close()
	}
}

// Synced returns a channel closed once the first response of typeURL has
// been applied (use it to gate readiness). Nil for an unconfigured type.
func (c *Client) Synced(typeURL string) <-chan struct{} {
	if t := c.types[typeURL]; t != nil {
		return t.synced
	}
	return nil
}

// Subscribe asks for resources of an OnDemand type by name or alias. A key
// the server doesn't know comes back as a removal of that key. Keys are
// remembered and re-sent after reconnects.
func (c *Client) Subscribe(typeURL string, keys ...string) error {
	t, err := c.onDemand(typeURL)
	if err != nil {
		return err
	}
	c.mu.Lock()
	for _, k := range keys {
		t.keys[k] = struct{}{}
	}
	s := c.cur
	c.mu.Unlock()
	if s != nil && len(keys) > 0 {
		// A failed send breaks the stream; the keys go out again on
		// reconnect.
		_ = s.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: typeURL, ResourceNamesSubscribe: keys})
	}
	return nil
}

// Unsubscribe withdraws on-demand keys. Resources reachable only through
// them are dropped and reported to the handler as removals.
func (c *Client) Unsubscribe(typeURL string, keys ...string) error {
	t, err := c.onDemand(typeURL)
	if err != nil {
		return err
	}
	c.handlerMu.Lock()
	defer c.handlerMu.Unlock()
	c.mu.Lock()
	for _, k := range keys {
		delete(t.keys, k)
	}
	dropped := make([]string, 0)
	for name, h := range t.held {
		if !covered(t.keys, name, h.aliases) {
			delete(t.held, name)
			dropped = append(dropped, name)
		}
	}
	s := c.cur
	c.mu.Unlock()
	if s != nil && len(keys) > 0 {
		_ = s.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: typeURL, ResourceNamesUnsubscribe: keys})
	}
	if len(dropped) > 0 {
		t.cfg.Handler.HandleDelta(Delta{TypeURL: typeURL, Removals: dropped})
	}
	return nil
}

func (c *Client) onDemand(typeURL string) (*typeState, error) {
	t := c.types[typeURL]
	if t == nil {
		return nil, fmt.Errorf("xds: type %s is not configured", typeURL)
	}
	if t.cfg.Mode != OnDemand {
		return nil, fmt.Errorf("xds: type %s is not on-demand", typeURL)
	}
	return t, nil
}

// covered reports whether a held resource is reachable from keys.
func covered(keys map[string]struct{}, name string, aliases []string) bool {
	if _, ok := keys[name]; ok {
		return true
	}
	for _, a := range aliases {
		if _, ok := keys[a]; ok {
			return true
		}
	}
	return false
}
