// Package l7 translates the mesh's L7 configuration — Gateway API routes
// attached to Services (the GAMMA model), Istio VirtualServices,
// DestinationRules, RequestAuthentications, waypoint-attached
// AuthorizationPolicies and Telemetry access logging — into the Envoy
// Listener and Cluster resources a waypoint consumes (see the waypoint L7
// contract).
//
// Build is a pure function of an index.Inputs snapshot, like index.Build:
// the same inputs in any order give byte-identical resources, and an object
// that cannot be used is reported as a Problem without blocking the others.
//
// Naming (fixed by the contract):
//   - Listener: "<namespace>/<hostname>:<port>", one per port of every
//     Service or ServiceEntry host bound to a waypoint (bound with the
//     index's rules; objects index.Validate refuses are skipped here too).
//   - Cluster: "outbound|<port>|<subset>|<hostname>" (Istio's form; the
//     subset is empty for the whole service). Routes to a backend that
//     cannot be used name a cluster that never exists ("missing|..." or the
//     Istio name of an unknown service), so the waypoint answers 500.
//
// Choices where the APIs leave room:
//   - Gateway API routes take precedence over VirtualServices for a
//     service; the VirtualService is reported. Of several VirtualServices,
//     one naming the host exactly beats a wildcard, then the oldest wins.
//   - Gateway API routes of one service are merged and ordered by Gateway
//     API precedence (exact path, regular expression, longest prefix,
//     method, header and query counts, then age and name). Only producer
//     routes (in the Service's namespace) apply; cross-namespace backends
//     need ReferenceGrants, which are not read, and fail with 500.
//   - Policies reach waypoints only through targetRefs (the waypoint
//     Gateway, a Service or ServiceEntry, or the istio-waypoint GatewayClass
//     from the root namespace). What a waypoint cannot check is dropped
//     from ALLOW rules (the rule is left out) and widened in DENY rules.
//   - Telemetry access logging for a service is decided by the most
//     specific Telemetry that configures it (telemetry.go): targetRefs to
//     the service, to its waypoint, the waypoint namespace's, the root
//     namespace's to the GatewayClass, then the mesh default.
//
// AllowFromWaypoints (waypointallow.go) is a separate post-processing step
// on index.Build's output: it adds Istio's implicit L4 policies that let a
// waypoint's identity through to the workloads it serves.
package l7
