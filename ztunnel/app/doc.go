// Package app wires ztunnel together: the controller's workload state over
// xDS, workload certificates from the CA, pods handed over by the node
// agent over ZDS (each getting in-pod listeners from package proxy), L4
// authorization with re-checks, and the admin, metrics and readiness
// endpoints.
package app
