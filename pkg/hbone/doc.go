// Package hbone implements HBONE, the tunnel protocol of Istio's ambient
// mode: HTTP/2 CONNECT carried over mutual TLS on port 15008.
//
// The package has these parts:
//
//   - Server terminates HBONE. It verifies the client's SPIFFE certificate,
//     validates each CONNECT request and hands it to a Handler, which accepts
//     (200, returning a bidirectional stream) or rejects (400/401/503).
//   - Pool originates HBONE. It dials, verifies the server's SPIFFE identity
//     against an expected set, and multiplexes CONNECT streams over pooled
//     HTTP/2 connections keyed the way ztunnel keys them.
//   - Streams (ClientStream, ServerStream) are net.Conns with read and
//     write deadlines; their Close resets a half still open, CloseWrite
//     half-closes gracefully.
//   - Splice copies bytes between two connections in both directions with
//     half-close propagation, for the proxies built on top of this package;
//     SpliceAsync does the same without blocking its caller.
//
// Wire behaviour (settings, headers, status codes, keepalive, pooling) follows
// the HBONE section of the zmesh compatibility notes so that Istio's ztunnel
// and zmesh interoperate in both directions.
//
// Both sides use their own HTTP/2 connection handling, built on the
// golang.org/x/net/http2 framer: the net/http-style handler model cannot end
// a response stream while still reading the request stream, and HBONE
// tunnels need TCP half-close in both directions; owning the client too lets
// a stream's bytes go from the caller's Write straight into one socket write
// (no per-stream goroutine, pipe or scratch buffer).
//
// Data path costs, which the package's benchmarks measure: under TLS sits a
// corking layer (corkconn.go), so each HTTP/2 frame or batch of control
// frames, however many TLS records it spans, is one write system call, and
// bulk reads take several records per system call. Small DATA frames
// written while another goroutine writes on the same connection join its
// batch (framewrite.go), so a burst of frames from many streams costs one
// TLS write and one system call. Received data waits in
// pooled chunks only until read. Splice parks no goroutine and pins no
// buffer on an idle stream direction, and while that direction is idle a
// stream's connection reader writes arriving data straight to the TCP
// socket when it takes it without blocking. SpliceAsync also parks none on
// an idle TCP direction: idle sockets wait in one epoll set for the whole
// process (readpoll_linux.go), and each burst of data is copied on a
// short-lived goroutine, so an idle proxied connection holds no goroutine
// stack and no buffer (tcpsource.go).
package hbone
