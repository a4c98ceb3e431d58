// Package status writes the conditions the index derives back to the
// Kubernetes objects they describe, as istiod does in ambient mode:
//
//   - Service.status.conditions gets istio.io/WaypointBound (True with the
//     waypoint's name, or False with why the binding failed);
//   - AuthorizationPolicy.status.conditions (Istio's IstioStatus) gets
//     ZtunnelAccepted for policies ztunnel enforces and WaypointAccepted
//     for policies attached to waypoints with targetRefs.
//
// The Writer patches only these condition types and leaves every other
// condition alone: Service conditions are server-side applied on the
// status subresource under the field manager "zmesh-controller" (their
// list is keyed by type, so other managers' entries are untouched);
// AuthorizationPolicy conditions, an atomic list in Istio's CRD, are
// merged into the object's current list and written with optimistic
// concurrency. Only changes are written. The Writer must run only on the
// elected leader.
package status
