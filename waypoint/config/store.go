// Package config turns the waypoint's xDS resources (workload API
// addresses, Listeners and Clusters of the L7 contract) into immutable
// Snapshots swapped atomically: each resource is validated on arrival; an
// invalid one is NACKed by name and its last good version keeps serving.
package config

import (
	"fmt"
	"log/slog"
	"maps"
	"sort"
	"sync"
	"sync/atomic"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"

	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/workloadapi/security"
	"github.com/zmesh/zmesh/pkg/xds"
	"github.com/zmesh/zmesh/waypoint/filter/jwt"
	"github.com/zmesh/zmesh/waypoint/upstream"
)

// Type URLs the waypoint follows.
const (
	ListenerTypeURL = "type.googleapis.com/envoy.config.listener.v3.Listener"
	ClusterTypeURL  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
)

// Store holds the current Snapshot and applies xDS deltas to it.
type Store struct {
	log  *slog.Logger
	jwks *jwt.Fetcher

	mu        sync.Mutex // serialises writers; guards rejected and addrKind
	rejected  map[string]string
	addrKind  map[string]string // address resource name → service key or "wl:"+uid
	cur       atomic.Pointer[Snapshot]
	listeners []func(*Snapshot)
}

// NewStore returns an empty store. jwks fetches remote key sets for
// jwt_authn filters.
func NewStore(log *slog.Logger, jwks *jwt.Fetcher) *Store {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{log: log, jwks: jwks, rejected: map[string]string{}, addrKind: map[string]string{}}
	empty := &Snapshot{services: map[string]*Service{}, workloads: map[string]*Workload{},
		listeners: map[string]*Listener{}, clusters: map[string]*upstream.ClusterConfig{}}
	empty.reindex()
	s.cur.Store(empty)
	return s
}

// Snapshot returns the current configuration.
func (s *Store) Snapshot() *Snapshot { return s.cur.Load() }

// OnChange registers f, called (under the writer lock, after the swap)
// with every new snapshot. Register before the xDS client starts.
func (s *Store) OnChange(f func(*Snapshot)) { s.listeners = append(s.listeners, f) }

func (s *Store) publish(next *Snapshot) {
	s.cur.Store(next)
	for _, f := range s.listeners {
		f(next)
	}
}

// Types returns the xDS subscriptions of the contract, all wildcard.
func (s *Store) Types() []xds.TypeConfig {
	return []xds.TypeConfig{
		{TypeURL: workloadapi.AddressTypeURL, New: func() proto.Message { return &workloadapi.Address{} }, Handler: xds.HandlerFunc(s.handleAddresses)},
		{TypeURL: security.AuthorizationTypeURL, New: func() proto.Message { return &security.Authorization{} }, Handler: xds.HandlerFunc(func(xds.Delta) []xds.Rejection { return nil })},
		{TypeURL: ListenerTypeURL, New: func() proto.Message { return &listenerv3.Listener{} }, Handler: xds.HandlerFunc(s.handleListeners)},
		{TypeURL: ClusterTypeURL, New: func() proto.Message { return &clusterv3.Cluster{} }, Handler: xds.HandlerFunc(s.handleClusters)},
	}
}

func (s *Store) reject(typ, name string, err error, out []xds.Rejection) []xds.Rejection {
	s.log.Warn("rejected resource", "type", typ, "name", name, "err", err)
	s.rejected[typ+" "+name] = err.Error()
	return append(out, xds.Rejection{Name: name, Err: err})
}

func (s *Store) handleAddresses(d xds.Delta) []xds.Rejection {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.cur.Load().clone()
	next.services = maps.Clone(next.services)
	next.workloads = maps.Clone(next.workloads)
	var rej []xds.Rejection
	remove := func(name string) {
		switch k := s.addrKind[name]; {
		case k == "":
		case len(k) > 3 && k[:3] == "wl:":
			delete(next.workloads, k[3:])
		default:
			delete(next.services, k)
		}
		delete(s.addrKind, name)
	}
	for _, name := range d.Removals {
		remove(name)
		delete(s.rejected, "address "+name)
	}
	for _, u := range d.Upserts {
		a, err := compileAddress(u.Name, u.Message)
		if err != nil {
			rej = s.reject("address", u.Name, err, rej)
			continue
		}
		delete(s.rejected, "address "+u.Name)
		remove(u.Name)
		if a.svc != nil {
			next.services[a.svc.Key] = a.svc
			s.addrKind[u.Name] = a.svc.Key
		} else {
			next.workloads[a.wl.UID] = a.wl
			s.addrKind[u.Name] = "wl:" + a.wl.UID
		}
	}
	next.reindex()
	s.publish(next)
	return rej
}

func (s *Store) handleListeners(d xds.Delta) []xds.Rejection {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.cur.Load().clone()
	next.listeners = maps.Clone(next.listeners)
	next.refused = maps.Clone(next.refused)
	if next.refused == nil {
		next.refused = map[string]bool{}
	}
	var rej []xds.Rejection
	for _, name := range d.Removals {
		delete(next.listeners, name)
		delete(next.refused, name)
		delete(s.rejected, "listener "+name)
	}
	for _, u := range d.Upserts {
		l, err := compileListener(u.Message.(*listenerv3.Listener), s.jwks)
		if err == nil && l.Name != u.Name {
			err = fmt.Errorf("resource name %q differs from the listener's name %q", u.Name, l.Name)
		}
		if err != nil {
			rej = s.reject("listener", u.Name, err, rej)
			if next.listeners[u.Name] == nil {
				next.refused[u.Name] = true
			}
			continue
		}
		delete(s.rejected, "listener "+u.Name)
		delete(next.refused, u.Name)
		next.listeners[u.Name] = l
	}
	s.publish(next)
	return rej
}

func (s *Store) handleClusters(d xds.Delta) []xds.Rejection {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.cur.Load().clone()
	next.clusters = maps.Clone(next.clusters)
	var rej []xds.Rejection
	for _, name := range d.Removals {
		delete(next.clusters, name)
		delete(s.rejected, "cluster "+name)
	}
	for _, u := range d.Upserts {
		c, err := upstream.CompileCluster(u.Message.(*clusterv3.Cluster))
		if err == nil && c.Name != u.Name {
			err = fmt.Errorf("resource name %q differs from the cluster's name %q", u.Name, c.Name)
		}
		if err != nil {
			rej = s.reject("cluster", u.Name, err, rej)
			continue
		}
		delete(s.rejected, "cluster "+u.Name)
		next.clusters[u.Name] = c
	}
	s.publish(next)
	return rej
}

// Dump is a JSON-friendly summary for /config_dump.
type Dump struct {
	Version   uint64            `json:"version"`
	Services  []string          `json:"services"`
	Workloads int               `json:"workloads"`
	Listeners []ListenerDump    `json:"listeners"`
	Clusters  []ClusterDump     `json:"clusters"`
	Rejected  map[string]string `json:"rejected,omitempty"`
}

// ListenerDump summarises a listener.
type ListenerDump struct {
	Name    string   `json:"name"`
	Kind    string   `json:"kind"`
	Routes  []string `json:"routes,omitempty"`
	Filters []string `json:"filters,omitempty"`
}

// ClusterDump summarises a cluster.
type ClusterDump struct {
	Name      string `json:"name"`
	LB        string `json:"lb_policy"`
	Endpoints int    `json:"inline_endpoints"`
	Outlier   bool   `json:"outlier_detection"`
}

// Dump summarises the current snapshot and the rejected resources.
func (s *Store) Dump() Dump {
	snap := s.Snapshot()
	d := Dump{Version: snap.Version, Workloads: len(snap.workloads)}
	for k := range snap.services {
		d.Services = append(d.Services, k)
	}
	sort.Strings(d.Services)
	for _, l := range snap.listeners {
		ld := ListenerDump{Name: l.Name, Kind: "tcp"}
		if l.HTTP != nil {
			ld.Kind = "http"
			for _, r := range l.HTTP.Routes.Routes {
				ld.Routes = append(ld.Routes, r.Name)
			}
			for _, f := range l.HTTP.Filters {
				ld.Filters = append(ld.Filters, f.Name)
			}
		}
		d.Listeners = append(d.Listeners, ld)
	}
	sort.Slice(d.Listeners, func(i, j int) bool { return d.Listeners[i].Name < d.Listeners[j].Name })
	for _, c := range snap.clusters {
		d.Clusters = append(d.Clusters, ClusterDump{Name: c.Name, LB: c.LB.String(), Endpoints: len(c.Endpoints), Outlier: c.Outlier != nil})
	}
	sort.Slice(d.Clusters, func(i, j int) bool { return d.Clusters[i].Name < d.Clusters[j].Name })
	s.mu.Lock()
	d.Rejected = maps.Clone(s.rejected)
	s.mu.Unlock()
	return d
}
