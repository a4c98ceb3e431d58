// Package zdsapi holds the node agent ↔ ztunnel protocol (istio.workload.zds)
// and its generated Go types. Run `make generate` after editing zds.proto.
package zdsapi
