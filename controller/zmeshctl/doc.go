// Package zmeshctl is zmesh's user command line, modelled on istioctl's
// ambient commands: `waypoint apply|list|status|delete` manages waypoint
// Gateways through the Kubernetes API, and `ztunnel-config` reads a ztunnel's
// admin /config_dump (directly, or port-forwarded through the API server)
// and prints its workloads, services, policies and certificates.
//
// NewCommand builds the command tree; controller/cmd/zmeshctl only runs it.
// Commands write results to the command's output stream and return errors
// (already phrased for a person) instead of exiting.
package zmeshctl
