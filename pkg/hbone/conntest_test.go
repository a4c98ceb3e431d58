package hbone

import (
	"context"
	"net"
	"testing"

	"golang.org/x/net/nettest"
)

// streamHandler hands each accepted server stream to streams.
type streamHandler struct{ streams chan *ServerStream }

func (h streamHandler) ServeHBONE(ctx context.Context, _ *Request, rw *ResponseWriter) {
	st, err := rw.Accept()
	if err != nil {
		return
	}
	h.streams <- st
	<-ctx.Done() // the stream's context ends when it is closed or reset
}

// gracefulClose gives a stream TCP's close: the suite below expects data
// written before Close to arrive, while a stream's own Close is abortive
// (it resets whatever half is still open, like SO_LINGER 0); CloseWrite
// first makes it graceful.
type gracefulClose struct {
	net.Conn
	closeWrite func() error
}

func (c gracefulClose) Close() error {
	_ = c.closeWrite()
	return c.Conn.Close()
}

// TestStreamsAreNetConns runs x/net's net.Conn conformance suite (basic
// I/O, half-duplex ping-pong, racy reads and writes, read and write
// deadlines in the past, present and future, Close unblocking I/O,
// concurrent methods) over a client and a server stream of one tunnel.
func TestStreamsAreNetConns(t *testing.T) {
	pki := newPKI(t, "cluster.local")
	h := streamHandler{streams: make(chan *ServerStream, 1)}
	_, addr := startServer(t, pki, h, nil)
	pool := newTestPool(t, pki, nil)
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		cs, err := pool.Dial(testCtx(t), dialReq(pki, t, addr, nil))
		if err != nil {
			return nil, nil, nil, err
		}
		ss := <-h.streams
		return gracefulClose{cs, cs.CloseWrite}, gracefulClose{ss, ss.CloseWrite}, func() { _ = cs.Close(); _ = ss.Close() }, nil
	})
}
