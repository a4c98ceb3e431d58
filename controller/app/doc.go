// Package app wires the controller together: a source of Kubernetes objects
// (the Kubernetes API, or the config directory in local mode) feeds
// controller/publish, which builds the index and the waypoints' L7
// configuration and publishes them over delta xDS; the CA consults the
// latest published state. Both gRPC services share one TLS port (15012),
// and monitoring (metrics, readiness, config dump) has its own (15014).
package app
