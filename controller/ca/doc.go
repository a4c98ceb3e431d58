// Package ca is the mesh certificate authority. It keeps the signing
// material (a self-signed root generated on first start and persisted, or an
// Istio-style plugged-in intermediate), signs workload certificates from
// CSRs for identities decided by the caller's authentication and node
// authorization, serves Istio's IstioCertificateService over gRPC, and keeps
// the controller's own serving certificate fresh.
package ca
