// Package security holds the ambient L4 authorization API (istio.security)
// and its generated Go types. Run `make generate` after editing authorization.proto.
package security

// AuthorizationTypeURL is the xDS type URL of Authorization resources.
const AuthorizationTypeURL = "type.googleapis.com/istio.security.Authorization"
