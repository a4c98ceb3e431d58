// Package auth identifies the callers of the controller's gRPC services (xDS
// and CA). In local mode callers present static bearer tokens or a mesh
// client certificate; on Kubernetes, service-account tokens checked by
// TokenReview implement the same interface.
package auth

import "context"

// Caller is an authenticated client of the controller.
type Caller struct {
	// Identity is the caller's SPIFFE ID, e.g. spiffe://cluster.local/ns/istio-system/sa/ztunnel.
	Identity string
	// Node is the node the caller runs on, when known (required for node
	// proxies that ask for certificates on behalf of pods).
	Node string
}

// Authenticator decides who is calling. It returns an error (never a zero
// Caller) when the request carries no credential it accepts. Implementations
// read the gRPC metadata and peer TLS state from ctx.
type Authenticator interface {
	Authenticate(ctx context.Context) (Caller, error)
}
