// Package upstream is the waypoint's side towards backends: compiled
// Cluster configuration, per-cluster runtime state (load balancing, circuit
// breakers, outlier detection) that survives configuration updates, and
// per-endpoint HTTP transports carried over HBONE tunnels.
package upstream

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// LBPolicy is a load-balancing algorithm.
type LBPolicy uint8

// Load-balancing policies.
const (
	RoundRobin LBPolicy = iota
	Random
	LeastRequest
	ConsistentHash // RING_HASH and MAGLEV
)

func (p LBPolicy) String() string {
	return [...]string{"ROUND_ROBIN", "RANDOM", "LEAST_REQUEST", "CONSISTENT_HASH"}[p]
}

// ClusterConfig is a validated Cluster resource. Immutable.
type ClusterConfig struct {
	Name string
	// Port, Subset and Hostname are parsed from an Istio-style name
	// "outbound|<port>|<subset>|<hostname>"; zero when the name is not one.
	Port     uint32
	Subset   string
	Hostname string

	LB LBPolicy
	// Circuit-breaker thresholds (Envoy defaults 1024, retries 3).
	MaxConnections, MaxPending, MaxRequests, MaxRetries uint32
	Outlier                                             *OutlierConfig
	ConnectTimeout                                      time.Duration
	MaxRequestsPerConn                                  uint32
	IdleTimeout                                         time.Duration
	// Endpoints from the inline load_assignment; HasEndpoints false means
	// "all healthy endpoints of the service from the workload API".
	Endpoints    []Endpoint
	HasEndpoints bool
}

// Endpoint is one backend address with its health.
type Endpoint struct {
	Addr    netip.AddrPort
	Healthy bool
}

// OutlierConfig is compiled outlier detection.
type OutlierConfig struct {
	Consecutive5xx     uint32
	Interval           time.Duration
	BaseEjectionTime   time.Duration
	MaxEjectionPercent uint32
}

// CompileCluster validates c.
func CompileCluster(c *clusterv3.Cluster) (*ClusterConfig, error) {
	cc := &ClusterConfig{Name: c.GetName(), MaxConnections: 1024, MaxPending: 1024, MaxRequests: 1024, MaxRetries: 3,
		ConnectTimeout: 10 * time.Second}
	if cc.Name == "" {
		return nil, errors.New("cluster without a name")
	}
	if parts := strings.Split(cc.Name, "|"); len(parts) == 4 && parts[0] == "outbound" {
		p, err := strconv.ParseUint(parts[1], 10, 16)
		if err != nil || p == 0 {
			return nil, fmt.Errorf("cluster %q: bad port in name", cc.Name)
		}
		cc.Port, cc.Subset, cc.Hostname = uint32(p), parts[2], parts[3]
	}
	switch c.GetLbPolicy() {
	case clusterv3.Cluster_ROUND_ROBIN:
		cc.LB = RoundRobin
	case clusterv3.Cluster_RANDOM:
		cc.LB = Random
	case clusterv3.Cluster_LEAST_REQUEST:
		cc.LB = LeastRequest
	case clusterv3.Cluster_RING_HASH, clusterv3.Cluster_MAGLEV:
		cc.LB = ConsistentHash
	default:
		return nil, fmt.Errorf("cluster %q: unsupported lb_policy %v", cc.Name, c.GetLbPolicy())
	}
	if th := c.GetCircuitBreakers().GetThresholds(); len(th) > 0 {
		t := th[0]
		set := func(dst *uint32, v interface{ GetValue() uint32 }, ok bool) {
			if ok {
				*dst = v.GetValue()
			}
		}
		set(&cc.MaxConnections, t.GetMaxConnections(), t.GetMaxConnections() != nil)
		set(&cc.MaxPending, t.GetMaxPendingRequests(), t.GetMaxPendingRequests() != nil)
		set(&cc.MaxRequests, t.GetMaxRequests(), t.GetMaxRequests() != nil)
		set(&cc.MaxRetries, t.GetMaxRetries(), t.GetMaxRetries() != nil)
	}
	if od := c.GetOutlierDetection(); od != nil {
		o := &OutlierConfig{Consecutive5xx: 5, Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: 10}
		if v := od.GetConsecutive_5Xx(); v != nil {
			o.Consecutive5xx = v.GetValue()
		}
		if v := od.GetConsecutiveGatewayFailure(); v != nil && o.Consecutive5xx == 0 {
			o.Consecutive5xx = v.GetValue()
		}
		if d := od.GetInterval(); d != nil {
			o.Interval = d.AsDuration()
		}
		if d := od.GetBaseEjectionTime(); d != nil {
			o.BaseEjectionTime = d.AsDuration()
		}
		if v := od.GetMaxEjectionPercent(); v != nil {
			o.MaxEjectionPercent = min(v.GetValue(), 100)
		}
		if o.Interval <= 0 || o.BaseEjectionTime <= 0 {
			return nil, fmt.Errorf("cluster %q: outlier_detection durations must be positive", cc.Name)
		}
		cc.Outlier = o
	}
	if d := c.GetConnectTimeout(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() <= 0 {
			return nil, fmt.Errorf("cluster %q: invalid connect_timeout", cc.Name)
		}
		cc.ConnectTimeout = d.AsDuration()
	}
	if o := c.GetCommonHttpProtocolOptions(); o != nil { //nolint:staticcheck // named by the contract
		if v := o.GetMaxRequestsPerConnection(); v != nil {
			cc.MaxRequestsPerConn = v.GetValue()
		}
		if d := o.GetIdleTimeout(); d != nil {
			cc.IdleTimeout = d.AsDuration()
		}
	}
	if v := c.GetMaxRequestsPerConnection(); v != nil && cc.MaxRequestsPerConn == 0 { //nolint:staticcheck // older translators
		cc.MaxRequestsPerConn = v.GetValue()
	}
	// A load_assignment present but empty (a subset selecting no pod) means
	// no endpoints: 503, never "all of the service's endpoints". Only an
	// absent one defers to the workload API.
	if la := c.GetLoadAssignment(); la != nil {
		cc.HasEndpoints = true
		for _, lle := range la.GetEndpoints() {
			for _, le := range lle.GetLbEndpoints() {
				sa := le.GetEndpoint().GetAddress().GetSocketAddress()
				if sa == nil {
					return nil, fmt.Errorf("cluster %q: endpoint without a socket address", cc.Name)
				}
				ip, err := netip.ParseAddr(sa.GetAddress())
				if err != nil || sa.GetPortValue() == 0 || sa.GetPortValue() > 65535 {
					return nil, fmt.Errorf("cluster %q: bad endpoint %s:%d", cc.Name, sa.GetAddress(), sa.GetPortValue())
				}
				hs := le.GetHealthStatus()
				healthy := hs == corev3.HealthStatus_UNKNOWN || hs == corev3.HealthStatus_HEALTHY || hs == corev3.HealthStatus_DEGRADED
				cc.Endpoints = append(cc.Endpoints, Endpoint{Addr: netip.AddrPortFrom(ip.Unmap(), uint16(sa.GetPortValue())), Healthy: healthy})
			}
		}
	}
	return cc, nil
}
