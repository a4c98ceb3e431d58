package hbone

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"testing"
	"time"
)

// tcpEcho runs a TCP echo backend that half-closes after the client does.
func tcpEcho(t *testing.T) net.Addr {
	t.Helper()
	return serveLoopback(t, func(c net.Conn) {
		defer func() { _ = c.Close() }()
		_, _ = io.Copy(c, c)
		_ = c.(*net.TCPConn).CloseWrite()
	})
}

// spliceChain is app → TCP → Splice → HBONE → Splice → TCP echo, the shape
// of ztunnel's outbound and inbound paths. Each accepted app connection
// gets its own tunnel; each splice reports its result on the channels.
type spliceChain struct {
	front                   net.Addr
	outboundRes, inboundRes chan SpliceResult
}

// spliceModes start a splice that reports its result on res: Splice on
// the calling goroutine, and SpliceAsync.
var spliceModes = []struct {
	name  string
	start func(a, b HalfCloser, pool *BufferPool, res chan<- SpliceResult)
}{
	{"sync", func(a, b HalfCloser, pool *BufferPool, res chan<- SpliceResult) { res <- Splice(a, b, pool) }},
	{"async", func(a, b HalfCloser, pool *BufferPool, res chan<- SpliceResult) {
		SpliceAsync(a, b, pool, func(r SpliceResult) { res <- r })
	}},
}

func startSpliceChain(t *testing.T, splice func(a, b HalfCloser, pool *BufferPool, res chan<- SpliceResult)) *spliceChain {
	t.Helper()
	pki := newPKI(t, "cluster.local")
	backend := tcpEcho(t)
	bp := NewBufferPool(0)
	sc := &spliceChain{outboundRes: make(chan SpliceResult, 100), inboundRes: make(chan SpliceResult, 100)}
	h := spliceHandler(backend, func(st *ServerStream, up *net.TCPConn) { splice(st, up, bp, sc.inboundRes) })
	_, addr := startServer(t, pki, h, nil)
	pool := newTestPool(t, pki, nil)

	// Outbound side: accept the app's TCP connection and splice it into HBONE.
	sc.front = serveLoopback(t, func(c net.Conn) {
		st, err := pool.Dial(context.Background(), dialReq(pki, t, addr, nil))
		if err != nil {
			_ = c.Close()
			t.Error(err)
			return
		}
		splice(c.(*net.TCPConn), st, bp, sc.outboundRes)
	})
	return sc
}

// checkResults expects both splices to report want bytes each way.
func (sc *spliceChain) checkResults(t *testing.T, want int64) {
	t.Helper()
	for name, ch := range map[string]chan SpliceResult{"outbound": sc.outboundRes, "inbound": sc.inboundRes} {
		select {
		case r := <-ch:
			if r.AToB != want || r.BToA != want || r.Err() != nil {
				t.Errorf("%s splice = %+v, want %d each way, no error", name, r, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s splice did not finish", name)
		}
	}
}

// TestSpliceProxyChain checks that bytes and half-close travel end to end
// through the chain with correct counts: bulk data read fast, bulk data
// read slowly (so sockets fill up and received data queues behind them),
// and many small request/response exchanges.
func TestSpliceProxyChain(t *testing.T) {
	for _, mode := range spliceModes {
		t.Run(mode.name, func(t *testing.T) {
			for _, tc := range []struct {
				name string
				slow bool
			}{{"fast reader", false}, {"slow reader", true}} {
				t.Run(tc.name, func(t *testing.T) {
					sc := startSpliceChain(t, mode.start)
					app, err := net.Dial("tcp", sc.front.String())
					if err != nil {
						t.Fatal(err)
					}
					defer app.Close()
					payload := make([]byte, 3<<20+7)
					_, _ = rand.Read(payload)
					go func() {
						_, _ = app.Write(payload)
						_ = app.(*net.TCPConn).CloseWrite()
					}()
					var got []byte
					if tc.slow {
						buf := make([]byte, 16<<10)
						for {
							n, err := app.Read(buf)
							got = append(got, buf[:n]...)
							if err != nil {
								break
							}
							time.Sleep(200 * time.Microsecond)
						}
					} else if got, err = io.ReadAll(app); err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(got, payload) {
						t.Fatalf("got %d bytes, want %d (equal prefix: %v)", len(got), len(payload), bytes.HasPrefix(payload, got))
					}
					sc.checkResults(t, int64(len(payload)))
				})
			}
			t.Run("request response", func(t *testing.T) {
				sc := startSpliceChain(t, mode.start)
				app, err := net.Dial("tcp", sc.front.String())
				if err != nil {
					t.Fatal(err)
				}
				defer app.Close()
				var total int64
				for i := range 300 {
					msg := bytes.Repeat([]byte{byte(i)}, 1+i*7)
					if _, err := app.Write(msg); err != nil {
						t.Fatal(err)
					}
					got := make([]byte, len(msg))
					if _, err := io.ReadFull(app, got); err != nil {
						t.Fatalf("exchange %d: %v", i, err)
					}
					if !bytes.Equal(got, msg) {
						t.Fatalf("exchange %d: echoed bytes differ", i)
					}
					total += int64(len(msg))
				}
				_ = app.(*net.TCPConn).CloseWrite()
				if rest, err := io.ReadAll(app); err != nil || len(rest) != 0 {
					t.Fatalf("after half-close: %d bytes, %v", len(rest), err)
				}
				sc.checkResults(t, total)
			})
		})
	}
}

func TestChunkQueue(t *testing.T) {
	q := chunkQueue{pool: NewBufferPool(7)}
	var want []byte
	out := make([]byte, 5)
	var got []byte
	for i := range 50 {
		p := bytes.Repeat([]byte{byte(i)}, i%13)
		q.write(p)
		want = append(want, p...)
		if i%3 == 0 {
			n := q.read(out)
			got = append(got, out[:n]...)
		}
	}
	for q.len() > 0 {
		n := q.read(out)
		got = append(got, out[:n]...)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("queue reordered or lost data")
	}
	q.write([]byte("x"))
	q.release()
	if q.len() != 0 || q.read(out) != 0 {
		t.Fatal("release left data")
	}
}

// TestSpliceStreamToStream splices two HBONE streams, as a waypoint does:
// client → server A, whose handler dials server B (echoing through a TCP
// backend) and splices the two streams. Both directions are stream-sourced.
func TestSpliceStreamToStream(t *testing.T) {
	pki := newPKI(t, "cluster.local")
	backend := tcpEcho(t)
	bp := NewBufferPool(0)
	_, addrB := startServer(t, pki, spliceHandler(backend, func(st *ServerStream, up *net.TCPConn) { Splice(st, up, bp) }), nil)
	poolA := newTestPool(t, pki, nil)
	midRes := make(chan SpliceResult, 1)
	_, addrA := startServer(t, pki, HandlerFunc(func(ctx context.Context, _ *Request, rw *ResponseWriter) {
		up, err := poolA.Dial(ctx, dialReq(pki, t, addrB, nil))
		if err != nil {
			_ = rw.Reject(503)
			return
		}
		st, err := rw.Accept()
		if err != nil {
			_ = up.Close()
			return
		}
		midRes <- Splice(st, up, bp)
	}), nil)

	pool := newTestPool(t, pki, nil)
	st, err := pool.Dial(testCtx(t), dialReq(pki, t, addrA, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	payload := make([]byte, 2<<20+3)
	_, _ = rand.Read(payload)
	go func() {
		_, _ = st.Write(payload)
		_ = st.CloseWrite()
	}()
	got, err := io.ReadAll(st)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("echoed %d of %d bytes, %v", len(got), len(payload), err)
	}
	select {
	case r := <-midRes:
		if want := int64(len(payload)); r.AToB != want || r.BToA != want || r.Err() != nil {
			t.Errorf("stream splice = %+v, want %d each way, no error", r, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stream splice did not finish")
	}
}
