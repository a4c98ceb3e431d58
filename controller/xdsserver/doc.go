// Package xdsserver serves the ambient workload API (and any other resource
// type the controller publishes) over delta ADS:
// envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources.
// The state-of-the-world StreamAggregatedResources answers Unimplemented.
//
// The controller hands the server complete sets of resources per type
// (Update) or single changes (Upsert, Delete). The server versions every
// resource by hashing its deterministic encoding, so versions survive
// controller restarts and clients reconnecting with initial_resource_versions
// are sent only what they lack. Changes are debounced and fanned out to the
// subscribed streams; each stream keeps, per type, what the client holds and
// a coalesced set of pending changes, so a slow client costs memory
// proportional to the resource set, never to the number of pushes.
//
// Why not go-control-plane's delta server and cache: they model a resource
// by its name only. The workload API needs lookups by alias
// ("<network>/<ip>" resolves to a workload uid and the response carries the
// real name with the alias listed), on-demand keys that resolve to nothing
// must be answered with a removal so the client learns they are absent, and
// on-demand mode is entered by subscribing and unsubscribing "*" in one
// request. Fitting those into the cache's snapshot/watch model would mean
// reimplementing most of it, so this package uses go-control-plane only for
// the protocol types and the service registration and has its own stream
// handler (stream.go), store (store.go) and debouncer (debounce.go).
package xdsserver
