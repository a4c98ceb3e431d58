package config

import (
	"net/netip"
	"slices"
	"strconv"

	"github.com/zmesh/zmesh/waypoint/upstream"
)

// Snapshot is one immutable view of the waypoint's configuration. Readers
// load it once per connection or request and never see it change.
type Snapshot struct {
	// Version increases with every change.
	Version uint64

	services  map[string]*Service
	vips      map[netip.AddrPort]*Service
	workloads map[string]*Workload
	byIP      map[netip.Addr]*Workload
	members   map[string][]*Workload // service key → workloads listing it
	listeners map[string]*Listener
	clusters  map[string]*upstream.ClusterConfig
	// refused names listeners that were rejected and have no good version:
	// their service port is not served rather than served without policy.
	refused map[string]bool
}

// Refused reports whether the listener of svc:port was rejected with no
// good version to fall back on; such traffic must be refused (fail closed).
func (s *Snapshot) Refused(svc *Service, port uint32) bool {
	var buf [128]byte
	return s.refused[string(listenerName(buf[:0], svc, port))]
}

// ServiceByVIP finds the service owning vip:port (the port must be one of
// the service's ports).
func (s *Snapshot) ServiceByVIP(ap netip.AddrPort) (*Service, ServicePort, bool) {
	svc := s.vips[ap]
	if svc == nil {
		return nil, ServicePort{}, false
	}
	sp, ok := svc.Port(uint32(ap.Port()))
	return svc, sp, ok
}

// Service returns the service with key "<namespace>/<hostname>".
func (s *Snapshot) Service(key string) *Service { return s.services[key] }

// ServiceByHost returns the service whose hostname is host (any namespace
// when ns is "").
func (s *Snapshot) ServiceByHost(ns, host string) *Service {
	if ns != "" {
		return s.services[ns+"/"+host]
	}
	for _, svc := range s.services {
		if svc.Hostname == host {
			return svc
		}
	}
	return nil
}

// WorkloadByIP returns the workload with address ip.
func (s *Snapshot) WorkloadByIP(ip netip.Addr) *Workload { return s.byIP[ip.Unmap()] }

// Listener returns the listener for a service key and port.
func (s *Snapshot) Listener(svc *Service, port uint32) *Listener {
	var buf [128]byte
	return s.listeners[string(listenerName(buf[:0], svc, port))]
}

// Cluster returns a cluster by name.
func (s *Snapshot) Cluster(name string) *upstream.ClusterConfig { return s.clusters[name] }

// Endpoint is a resolved backend: the workload and the address to reach.
type Endpoint struct {
	Workload *Workload
	Addr     netip.AddrPort
}

// ServiceEndpoints lists the healthy workloads of svc with the target port
// for servicePort, ordered by uid (stable for load balancing).
func (s *Snapshot) ServiceEndpoints(svc *Service, servicePort uint32) []Endpoint {
	sp, _ := svc.Port(servicePort)
	var out []Endpoint
	for _, w := range s.members[svc.Key] {
		if !w.Healthy || len(w.IPs) == 0 {
			continue
		}
		target := sp.TargetPort
		if t, ok := w.Services[svc.Key][servicePort]; ok && t != 0 {
			target = t
		}
		if target == 0 {
			target = servicePort
		}
		out = append(out, Endpoint{Workload: w, Addr: netip.AddrPortFrom(w.IPs[0], uint16(target))})
	}
	return out
}

func (s *Snapshot) clone() *Snapshot {
	return &Snapshot{Version: s.Version + 1, listeners: s.listeners, clusters: s.clusters, refused: s.refused,
		services: s.services, vips: s.vips, workloads: s.workloads, byIP: s.byIP, members: s.members}
}

// reindex rebuilds the address indexes from services and workloads.
func (s *Snapshot) reindex() {
	s.vips = map[netip.AddrPort]*Service{}
	for _, svc := range s.services {
		for _, ip := range svc.VIPs {
			for _, p := range svc.Ports {
				s.vips[netip.AddrPortFrom(ip, uint16(p.Port))] = svc
			}
		}
	}
	s.byIP = map[netip.Addr]*Workload{}
	s.members = map[string][]*Workload{}
	for _, w := range s.workloads {
		for _, ip := range w.IPs {
			s.byIP[ip] = w
		}
		for key := range w.Services {
			s.members[key] = append(s.members[key], w)
		}
	}
	for _, ws := range s.members {
		slices.SortFunc(ws, func(a, b *Workload) int {
			switch {
			case a.UID < b.UID:
				return -1
			case a.UID > b.UID:
				return 1
			}
			return 0
		})
	}
}

// listenerName appends the name of svc's listener for port, as the
// controller names Listeners ("<namespace>/<hostname>:<port>"), to b.
// Lookups build it in a stack buffer: a concatenated key would be
// allocated on every request.
func listenerName(b []byte, svc *Service, port uint32) []byte {
	b = append(b, svc.Namespace...)
	b = append(b, '/')
	b = append(b, svc.Hostname...)
	b = append(b, ':')
	return strconv.AppendUint(b, uint64(port), 10)
}
