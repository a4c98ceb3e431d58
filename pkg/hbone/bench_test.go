package hbone

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"
)

const benchChunk = 64 << 10

// sinkThenAck reads r to EOF, then writes one byte so the sender can tell
// that everything arrived.
func sinkThenAck(rw io.ReadWriter, buf []byte) {
	for {
		if _, err := rw.Read(buf); err != nil {
			break
		}
	}
	_, _ = rw.Write([]byte{1})
}

func runThroughput(b *testing.B, c HalfCloser) {
	buf := make([]byte, benchChunk)
	b.SetBytes(benchChunk)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.CloseWrite(); err != nil {
		b.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf[:1]); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
}

// BenchmarkThroughput moves 64 KiB writes over one stream on loopback:
// plain TCP and plain TLS as baselines, then HBONE.
func BenchmarkThroughput(b *testing.B) {
	b.Run("tcp", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer func() { _ = c.Close() }()
			sinkThenAck(c, make([]byte, benchChunk))
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = c.Close() }()
		runThroughput(b, c.(*net.TCPConn))
	})

	b.Run("tls", func(b *testing.B) {
		pki := newPKI(b, "cluster.local")
		srvCert := pki.leaf(b, serverSPIFFE)
		ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{*srvCert}})
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer func() { _ = c.Close() }()
			sinkThenAck(c, make([]byte, benchChunk))
		}()
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = c.Close() }()
		runThroughput(b, c)
	})

	b.Run("hbone", func(b *testing.B) {
		pki := newPKI(b, "cluster.local")
		h := HandlerFunc(func(_ context.Context, _ *Request, rw *ResponseWriter) {
			st, err := rw.Accept()
			if err != nil {
				return
			}
			defer func() { _ = st.Close() }()
			sinkThenAck(st, make([]byte, benchChunk))
			_ = st.CloseWrite()
		})
		_, addr := startServer(b, pki, h, nil)
		pool := newTestPool(b, pki, nil)
		st, err := pool.Dial(context.Background(), dialReq(pki, b, addr, nil))
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = st.Close() }()
		runThroughput(b, st)
	})
}

// BenchmarkConnectLatency measures opening (and closing) one tunnel on an
// already pooled connection, against a fresh loopback TCP connect.
func BenchmarkConnectLatency(b *testing.B) {
	b.Run("tcp", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_ = c.Close()
			}
		}()
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			_ = c.Close()
		}
	})

	b.Run("hbone", func(b *testing.B) {
		pki := newPKI(b, "cluster.local")
		h := HandlerFunc(func(_ context.Context, _ *Request, rw *ResponseWriter) {
			st, err := rw.Accept()
			if err != nil {
				return
			}
			_ = st.Close()
		})
		_, addr := startServer(b, pki, h, nil)
		pool := newTestPool(b, pki, nil)
		req := dialReq(pki, b, addr, nil)
		st, err := pool.Dial(context.Background(), req) // warm the pool
		if err != nil {
			b.Fatal(err)
		}
		_ = st.Close()
		ctx := context.Background()
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			st, err := pool.Dial(ctx, req)
			if err != nil {
				b.Fatal(err)
			}
			_ = st.Close()
		}
		b.StopTimer()
		if s := pool.Stats(); s.Dials != 1 {
			b.Errorf("benchmark dialled %d connections, want 1", s.Dials)
		}
	})
}
