// Package workloadapi holds zmesh's declaration of the ambient workload API (istio.workload)
// and its generated Go types. Run `make generate` after editing workload.proto.
package workloadapi

// AddressTypeURL is the xDS type URL of Address resources.
const AddressTypeURL = "type.googleapis.com/istio.workload.Address"
