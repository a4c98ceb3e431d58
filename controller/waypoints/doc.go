// Package waypoints deploys waypoint proxies for Gateways of class
// istio-waypoint and reports their status, as Istio's gateway deployment
// controller does for ambient mode.
//
// For each such Gateway the Deployer server-side-applies a ServiceAccount,
// a Deployment running the waypoint binary and a Service (ports 15021
// status-port and the Gateway's HBONE listener, 15008), all named after the
// Gateway and owned by it, so that Kubernetes' garbage collector removes
// them with the Gateway. It then writes the Gateway's status: Accepted,
// Programmed, and the Service's cluster IPs as status addresses. The
// controller's index binds workloads and services to a waypoint only once
// those addresses exist.
//
// The Deployer writes to the API server and must run only on the elected
// leader; Run may be started and stopped repeatedly.
package waypoints
