// Package e2e runs the mesh end to end on this machine: a network-namespace
// cluster (package cluster) with the echo app in every pod, the controller
// in local mode, and per node a node agent and a ztunnel. The tests need
// root; they skip without it, and CI always runs them as root.
package e2e
