package zds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zmesh/zmesh/pkg/zdsapi"
)

// ClientConfig configures ztunnel's side.
type ClientConfig struct {
	// Path of the agent's socket; empty means DefaultSocketPath.
	Path string
	// Handler receives the requests; required.
	Handler Handler
	// MinBackoff and MaxBackoff bound the reconnect delay, which doubles
	// after each failed attempt and is jittered (defaults 100ms and 5s).
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// Logger receives connection events; nil means slog.Default().
	Logger *slog.Logger
}

// Client is ztunnel's side of ZDS. See the package comment.
type Client struct {
	cfg ClientConfig
	log *slog.Logger

	mu      sync.Mutex
	started bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	connected atomic.Bool
	sessions  atomic.Uint64
}

// NewClient validates cfg and returns a Client; Start connects.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Handler == nil {
		return nil, errors.New("zds: ClientConfig.Handler is required")
	}
	if cfg.Path == "" {
		cfg.Path = DefaultSocketPath
	}
	if cfg.MinBackoff < 0 || cfg.MaxBackoff < 0 {
		return nil, errors.New("zds: negative backoff")
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = cfg.MinBackoff
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Client{cfg: cfg, log: log.With("component", "zds-client", "path", cfg.Path)}, nil
}

// Start begins connecting (and reconnecting) in the background. Handler
// methods are called from that one goroutine, one at a time.
func (c *Client) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return errors.New("zds: client already started")
	}
	c.started = true
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.wg.Add(1)
	go c.loop(ctx)
	return nil
}

// Stop closes the connection, cancels the context handed to a running
// Handler call and waits until the client's goroutines have returned.
func (c *Client) Stop() {
	c.mu.Lock()
	cancel := c.cancel
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	c.wg.Wait()
}

// Connected reports whether the client has a connection to the agent
// (hello sent).
func (c *Client) Connected() bool { return c.connected.Load() }

// Sessions returns how many connections the client has established.
func (c *Client) Sessions() uint64 { return c.sessions.Load() }

func (c *Client) loop(ctx context.Context) {
	defer c.wg.Done()
	delay := c.cfg.MinBackoff
	for {
		established, err := c.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if established {
			delay = c.cfg.MinBackoff
			c.log.Info("disconnected from node agent, reconnecting", "err", err)
		} else {
			c.log.Debug("cannot reach node agent", "err", err, "retry_in", delay)
		}
		// Full jitter in [delay/2, delay].
		wait := delay/2 + time.Duration(rand.Int64N(int64(delay/2)+1))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if !established {
			delay = min(2*delay, c.cfg.MaxBackoff)
		}
	}
}

// session runs one connection: dial, hello, then requests until it ends.
// established reports whether the hello went out.
func (c *Client) session(ctx context.Context) (established bool, err error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unixpacket", c.cfg.Path)
	if err != nil {
		return false, fmt.Errorf("zds: dial: %w", err)
	}
	conn := nc.(*net.UnixConn)
	defer func() { _ = conn.Close() }()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()

	hello := &zdsapi.ZdsHello{Version: zdsapi.Version_V1}
	if err := writeMessage(conn, hello, nil); err != nil {
		return false, fmt.Errorf("zds: send hello: %w", err)
	}
	c.sessions.Add(1)
	c.connected.Store(true)
	defer c.connected.Store(false)
	c.log.Info("connected to node agent")

	st := newDispatcher(c.cfg.Handler, c.log)
	for {
		dg, err := readDatagram(conn)
		if err != nil && !errors.Is(err, errTruncated) {
			if dg != nil {
				dg.closeFiles()
			}
			return true, err
		}
		if err != nil {
			// A truncated datagram cannot be decoded; say so.
			dg.closeFiles()
			dg.payload = nil
			err = st.ack(conn, fmt.Sprintf("zds: %v", err))
		} else {
			err = st.ack(conn, st.handle(ctx, dg))
		}
		if err != nil {
			return true, fmt.Errorf("zds: send ack: %w", err)
		}
	}
}
