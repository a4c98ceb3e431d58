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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return ln.Addr()
}

// TestSpliceProxyChain wires app → TCP → Splice → HBONE → Splice → TCP echo,
// the shape of ztunnel's outbound and inbound paths, and checks bytes and
// half-close travel end to end with correct counts.
func TestSpliceProxyChain(t *testing.T) {
	pki := newPKI(t, "cluster.local")
	backend := tcpEcho(t)
	bp := NewBufferPool(0)
	inboundRes := make(chan SpliceResult, 1)
	h := HandlerFunc(func(ctx context.Context, req *Request, rw *ResponseWriter) {
		up, err := (&net.Dialer{}).DialContext(ctx, "tcp", backend.String())
		if err != nil {
			_ = rw.Reject(503)
			return
		}
		st, err := rw.Accept()
		if err != nil {
			up.Close()
			return
		}
		inboundRes <- Splice(st, up.(*net.TCPConn), bp)
	})
	_, addr := startServer(t, pki, h, nil)
	pool := newTestPool(t, pki, nil)

	// Outbound side: accept the app's TCP connection and splice it into HBONE.
	outLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer outLn.Close()
	outboundRes := make(chan SpliceResult, 1)
	go func() {
		c, err := outLn.Accept()
		if err != nil {
			return
		}
		st, err := pool.Dial(context.Background(), dialReq(pki, t, addr, nil))
		if err != nil {
			_ = c.Close()
			t.Error(err)
			return
		}
		outboundRes <- Splice(c.(*net.TCPConn), st, bp)
	}()

	app, err := net.Dial("tcp", outLn.Addr().String())
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
	got, err := io.ReadAll(app)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("got %d bytes, want %d", len(got), len(payload))
	}
	want := int64(len(payload))
	for name, ch := range map[string]chan SpliceResult{"outbound": outboundRes, "inbound": inboundRes} {
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
