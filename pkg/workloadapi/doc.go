// Package workloadapi holds zmesh's declaration of the ambient workload API (istio.workload)
// and its generated Go types. Run `make generate` after editing workload.proto.
//
// It also holds the rules every consumer applies to a received Address:
// ValidateWorkload and ValidateService (errors wrap ErrInvalid) and
// CheckWorkloadEnums. ztunnel and the waypoint both use them, so the two
// proxies accept and NACK the same resources.
package workloadapi

// AddressTypeURL is the xDS type URL of Address resources.
const AddressTypeURL = "type.googleapis.com/istio.workload.Address"
