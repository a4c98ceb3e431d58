// Package identity keeps ztunnel's workload certificates: one per service
// account with a pod on this node, obtained from the mesh CA by
// impersonation, renewed at half life, and kept while the CA is unreachable
// for as long as it is still valid. An expired certificate is never handed
// out: connections for that identity fail until renewal succeeds.
package identity
