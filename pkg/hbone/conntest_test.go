package hbone

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

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

// TestConcurrentReadsAllWake: several Reads blocked on one stream all
// return when the read deadline passes, and all see the end of the
// stream; one wake-up signal must reach each of them. (nettest's
// concurrent-methods test hung now and then before Reads passed wake-ups
// on.)
func TestConcurrentReadsAllWake(t *testing.T) {
	pki := newPKI(t, "cluster.local")
	h := streamHandler{streams: make(chan *ServerStream, 1)}
	_, addr := startServer(t, pki, h, nil)
	pool := newTestPool(t, pki, nil)
	const readers = 8
	for _, tc := range []struct {
		name string
		end  func(reader, peer net.Conn)
		want error
	}{
		{"deadline", func(r, _ net.Conn) { _ = r.SetReadDeadline(time.Unix(1, 0)) }, os.ErrDeadlineExceeded},
		{"end of stream", func(_, peer net.Conn) { _ = peer.(interface{ CloseWrite() error }).CloseWrite() }, io.EOF},
	} {
		for _, side := range []string{"client", "server"} {
			t.Run(tc.name+"/"+side, func(t *testing.T) {
				cs, err := pool.Dial(testCtx(t), dialReq(pki, t, addr, nil))
				if err != nil {
					t.Fatal(err)
				}
				ss := <-h.streams
				defer func() { _ = cs.Close(); _ = ss.Close() }()
				var reader, peer net.Conn = cs, ss
				if side == "server" {
					reader, peer = ss, cs
				}
				errs := make(chan error, readers)
				for range readers {
					go func() {
						_, err := reader.Read(make([]byte, 16))
						errs <- err
					}()
				}
				time.Sleep(50 * time.Millisecond) // let them block
				tc.end(reader, peer)
				for i := range readers {
					select {
					case err := <-errs:
						if !errors.Is(err, tc.want) {
							t.Fatalf("read %d: %v, want %v", i, err, tc.want)
						}
					case <-time.After(5 * time.Second):
						t.Fatalf("%d of %d reads still blocked", readers-i, readers)
					}
				}
			})
		}
	}
}

// TestSetPeerDone: the function runs once the client has finished
// sending with nothing unread (at once when that is already so), not while
// sent data waits unread, and not once replaced by nil.
func TestSetPeerDone(t *testing.T) {
	pki := newPKI(t, "cluster.local")
	h := streamHandler{streams: make(chan *ServerStream, 1)}
	_, addr := startServer(t, pki, h, nil)
	pool := newTestPool(t, pki, nil)
	for _, tc := range []struct {
		name string
		// run drives client cs and server ss; done is closed by the
		// function given to SetPeerDone.
		run func(t *testing.T, cs *ClientStream, ss *ServerStream, set func())
		// fires says whether the function must run.
		fires bool
	}{
		{"half-close", func(t *testing.T, cs *ClientStream, ss *ServerStream, set func()) {
			set()
			_ = cs.CloseWrite()
		}, true},
		{"reset", func(t *testing.T, cs *ClientStream, ss *ServerStream, set func()) {
			set()
			_ = cs.Close()
		}, true},
		{"already ended", func(t *testing.T, cs *ClientStream, ss *ServerStream, set func()) {
			_ = cs.CloseWrite()
			if _, err := ss.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
				t.Fatalf("read %v, want EOF", err)
			}
			set()
		}, true},
		{"unread data", func(t *testing.T, cs *ClientStream, ss *ServerStream, set func()) {
			set()
			_, _ = cs.Write([]byte("next request"))
			_ = cs.CloseWrite()
		}, false},
		{"cancelled", func(t *testing.T, cs *ClientStream, ss *ServerStream, set func()) {
			set()
			ss.SetPeerDone(nil)
			_ = cs.CloseWrite()
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs, err := pool.Dial(testCtx(t), dialReq(pki, t, addr, nil))
			if err != nil {
				t.Fatal(err)
			}
			ss := <-h.streams
			defer func() { _ = cs.Close(); _ = ss.Close() }()
			done := make(chan struct{})
			tc.run(t, cs, ss, func() { ss.SetPeerDone(func() { close(done) }) })
			select {
			case <-done:
				if !tc.fires {
					t.Fatal("ran although it should not")
				}
			case <-time.After(300 * time.Millisecond):
				if tc.fires {
					t.Fatal("did not run")
				}
			}
		})
	}
}
