// Package xds is the delta ADS client ztunnel and the waypoint use to follow
// the controller: it keeps one DeltaAggregatedResources stream open,
// subscribes to the configured types (wildcard or on-demand), decodes each
// response, hands the changes to a per-type Handler and ACKs, or NACKs
// naming the resources the handler (or decoding) rejected while the valid
// ones stay applied. After a broken stream it reconnects with capped,
// jittered exponential backoff, telling the server in
// initial_resource_versions what it already holds so only changes are sent.
//
// TLS and other transport concerns are the caller's: pass them as
// grpc.DialOptions. Credentials for the controller come from a token
// function called for every new stream.
package xds
