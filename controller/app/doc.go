// Package app wires the controller together: a source of Kubernetes objects
// (the config directory in local mode) feeds the index, whose output is
// published over delta xDS and consulted by the CA; both gRPC services share
// one TLS port (15012), and monitoring (metrics, readiness, config dump) has
// its own (15014).
package app
