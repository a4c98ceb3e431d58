package l7

import (
	"github.com/zmesh/zmesh/controller/xdsserver"
)

// Type URLs of the waypoint's L7 resources.
const (
	ListenerTypeURL = "type.googleapis.com/envoy.config.listener.v3.Listener"
	ClusterTypeURL  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
)

// ListenerResources returns the Listeners as xdsserver resources, named
// by Listener name. The bodies are out's messages: the server keeps them,
// so neither may be modified afterwards.
func (out *Output) ListenerResources() []xdsserver.Resource {
	rs := make([]xdsserver.Resource, 0, len(out.Listeners))
	for _, l := range out.Listeners {
		rs = append(rs, xdsserver.Resource{Name: l.Name, Body: l})
	}
	return rs
}

// ClusterResources returns the Clusters as xdsserver resources, named by
// Cluster name, with the same ownership rule as ListenerResources.
func (out *Output) ClusterResources() []xdsserver.Resource {
	rs := make([]xdsserver.Resource, 0, len(out.Clusters))
	for _, c := range out.Clusters {
		rs = append(rs, xdsserver.Resource{Name: c.Name, Body: c})
	}
	return rs
}
