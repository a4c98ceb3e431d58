// Package echo is the application every simulated pod runs: a TCP echo
// server and an HTTP server that reports who served a request and whom it
// saw, plus a client for both.
//
// An HTTP response (see Report) names the serving pod, the listener port,
// the peer address the server saw, the request's Host and the peer's SPIFFE
// identity. The identity is known only on listeners that expect a PROXY
// protocol v2 header, the way Istio's ztunnel hands connections to an app
// whose workload has application_tunnel PROXY: ztunnel writes a v2 header
// whose source is the original client and whose TLV 0xD0 carries the peer's
// identity ("spiffe://<td>/ns/<ns>/sa/<sa>"); TLV 0xD1, when present,
// carries the service hostname. Without a header the identity is "".
//
// Responses are plain "key=value" lines by default and JSON when the
// request asks for it (Accept: application/json or ?format=json);
// ParseReport reads either.
package echo
