// Package hbone implements HBONE, the tunnel protocol of Istio's ambient
// mode: HTTP/2 CONNECT carried over mutual TLS on port 15008.
//
// The package has three parts:
//
//   - Server terminates HBONE. It verifies the client's SPIFFE certificate,
//     validates each CONNECT request and hands it to a Handler, which accepts
//     (200, returning a bidirectional stream) or rejects (400/401/503).
//   - Pool originates HBONE. It dials, verifies the server's SPIFFE identity
//     against an expected set, and multiplexes CONNECT streams over pooled
//     HTTP/2 connections keyed the way ztunnel keys them.
//   - Splice copies bytes between two connections in both directions with
//     half-close propagation, for the proxies built on top of this package.
//
// Wire behaviour (settings, headers, status codes, keepalive, pooling) follows
// the HBONE section of the zmesh compatibility notes so that Istio's ztunnel
// and zmesh interoperate in both directions.
//
// The server side uses its own HTTP/2 connection handling (built on the
// golang.org/x/net/http2 framer) because the net/http-style handler model
// cannot end a response stream while still reading the request stream, and
// HBONE tunnels need TCP half-close in both directions. The client side uses
// golang.org/x/net/http2's ClientConn.
package hbone
