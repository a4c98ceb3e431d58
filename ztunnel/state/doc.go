// Package state is ztunnel's in-memory view of the mesh: the workloads,
// services and authorization policies the controller serves over delta
// xDS, indexed for the per-connection lookups of the proxy.
//
// The State is fed by two xds.Handlers (AddressHandler and
// AuthorizationHandler). Each delta is validated resource by resource: an
// invalid resource is rejected (and NACKed by pkg/xds) while its valid
// siblings apply, and a rejected update leaves the previously accepted
// version of that resource in place, as xDS prescribes.
//
// Concurrency: every applied delta builds a new immutable snapshot
// (copy-on-write of the indexes it touches) and publishes it with one atomic
// pointer store, so readers see the state before or after a delta, never
// half of it. Lookups load that pointer and read plain maps: no locks and no
// allocations on the connection path. Values handed out (workloads,
// services, policies, endpoint slices) are shared and must not be modified.
package state
