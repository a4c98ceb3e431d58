package hbone

import "time"

// HTTP/2 and pooling parameters that match ztunnel. They are the defaults of
// ServerConfig and PoolConfig.
const (
	// Port is the well-known HBONE port.
	Port = 15008

	// StreamWindow is the per-stream receive window advertised by both sides.
	StreamWindow = 4 << 20
	// ConnWindow is the per-connection receive window advertised by both sides.
	ConnWindow = 16 << 20
	// MaxFrameSize is the largest frame each side is willing to receive.
	MaxFrameSize = 1 << 20
	// MaxConcurrentStreams is what the server advertises.
	MaxConcurrentStreams = 200
	// MaxHeaderListSize is the server's header list limit.
	MaxHeaderListSize = 64 << 10

	// DefaultKeepaliveInterval is how often an idle connection is pinged.
	DefaultKeepaliveInterval = 10 * time.Second
	// DefaultKeepaliveTimeout is how long a PING may go unanswered before the
	// connection is dropped.
	DefaultKeepaliveTimeout = 20 * time.Second

	// DefaultMaxStreamsPerConn is how many streams the pool puts on one
	// connection before opening another.
	DefaultMaxStreamsPerConn = 100
	// DefaultIdleTimeout is how long a pooled connection may sit without
	// streams before it is closed.
	DefaultIdleTimeout = 5 * time.Minute

	// DefaultHandshakeTimeout bounds the TLS handshake on both sides.
	DefaultHandshakeTimeout = 10 * time.Second
)
