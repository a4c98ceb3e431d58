package state

import (
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/zmesh/zmesh/pkg/workloadapi"
)

// State is ztunnel's index of the mesh. Create it with New; it is safe for
// concurrent use. Readers never block: every lookup loads the current
// snapshot from an atomic pointer. Writers (the xDS handlers) are
// serialised by writeMu and publish a new snapshot per delta.
type State struct {
	log *slog.Logger

	// cur is the published snapshot; never nil after New.
	cur atomic.Pointer[snapshot]

	// writeMu serialises HandleDelta calls (pkg/xds already does, but the
	// State does not rely on it).
	writeMu sync.Mutex

	// subMu guards subs and nextSub.
	subMu   sync.Mutex
	subs    map[uint64]func()
	nextSub uint64
}

// snapshot is one immutable version of the whole state. The address and
// policy halves are separate so a policy delta does not copy address
// indexes and vice versa.
type snapshot struct {
	addr *addrIndex
	pol  *PolicySet
}

// addrKey keys the by-address indexes: a network name and an unmapped IP.
type addrKey struct {
	network string
	ip      netip.Addr
}

func keyOf(network string, ip netip.Addr) addrKey {
	return addrKey{network: network, ip: ip.Unmap()}
}

// New returns an empty State. log may be nil (nothing is logged).
func New(log *slog.Logger) *State {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &State{log: log, subs: map[uint64]func(){}}
	s.cur.Store(&snapshot{addr: newAddrIndex(), pol: newPolicySet()})
	return s
}

// Subscribe registers fn to be called after every delta that changed the
// State, once the new snapshot is visible to readers. fn runs on the xDS
// handler goroutine and must not block (signal a channel instead); several
// changes may be reported by one call. The returned function unsubscribes.
func (s *State) Subscribe(fn func()) (cancel func()) {
	s.subMu.Lock()
	id := s.nextSub
	s.nextSub++
	s.subs[id] = fn
	s.subMu.Unlock()
	return func() {
		s.subMu.Lock()
		delete(s.subs, id)
		s.subMu.Unlock()
	}
}

// notify calls the subscribers (outside subMu, so they may unsubscribe).
func (s *State) notify() {
	s.subMu.Lock()
	fns := make([]func(), 0, len(s.subs))
	for _, fn := range s.subs {
		fns = append(fns, fn)
	}
	s.subMu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

// WorkloadByUID returns the workload with that uid, or nil.
func (s *State) WorkloadByUID(uid string) *workloadapi.Workload {
	if e := s.cur.Load().addr.workloads[uid]; e != nil {
		return e.w
	}
	return nil
}

// WorkloadByAddr returns the workload at ip on network, or nil. When
// several workloads claim the address, Istio's preference applies: a Pod
// over other kinds, then HBONE over plain TCP, then the smallest uid.
// Host-network workloads are not indexed by address.
func (s *State) WorkloadByAddr(network string, ip netip.Addr) *workloadapi.Workload {
	if e := s.cur.Load().addr.workloadAt(keyOf(network, ip)); e != nil {
		return e.w
	}
	return nil
}

// Service returns the service with key "<namespace>/<hostname>", or nil.
func (s *State) Service(key string) *Service {
	return s.cur.Load().addr.services[key]
}

// ServiceByAddr returns the service with VIP ip on network, or nil. When
// several services claim a VIP, the canonical one wins, then the smallest
// key. Only a VIP's exact address is indexed: a NetworkAddress length
// (CIDR) is validated but not used for lookups, as in Istio's ztunnel.
func (s *State) ServiceByAddr(network string, ip netip.Addr) *Service {
	return s.cur.Load().addr.serviceAt(keyOf(network, ip))
}

// Policies returns the current set of authorization policies. The set is
// immutable; a new one is published by each policy delta, so pointer
// equality tells whether policies changed.
func (s *State) Policies() *PolicySet {
	return s.cur.Load().pol
}

// TargetKind says what an address resolved to.
type TargetKind uint8

const (
	// TargetUnknown: neither a service VIP nor a workload address; the
	// proxy passes the connection through to the original destination.
	TargetUnknown TargetKind = iota
	// TargetService: a service VIP; pick an endpoint with PickEndpoint.
	TargetService
	// TargetWorkload: a workload address, connected to directly.
	TargetWorkload
)

// String names the kind for logs.
func (k TargetKind) String() string {
	switch k {
	case TargetService:
		return "service"
	case TargetWorkload:
		return "workload"
	}
	return "unknown"
}

// Target is the result of Destination. The pointers are shared, read-only.
type Target struct {
	Kind TargetKind
	// Service is set for TargetService.
	Service *Service
	// Workload is set for TargetWorkload.
	Workload *workloadapi.Workload
	// Identities are the identities the workload may present (its own
	// SPIFFE ID), for TargetWorkload. Shared: do not modify.
	Identities []string
	// Port is the requested port: the service port for TargetService, the
	// workload port for TargetWorkload.
	Port uint16
}

// Destination resolves an original destination. Service VIPs are matched
// first, then workload addresses (the order of Istio's ztunnel for
// upstream selection); anything else is TargetUnknown. A service is
// returned even when it does not declare port (its waypoint may still
// apply); PickEndpoint then fails with ErrUnknownPort, on which Istio
// passes the connection through. It does not allocate.
func (s *State) Destination(network string, ip netip.Addr, port uint16) Target {
	ai := s.cur.Load().addr
	k := keyOf(network, ip)
	if svc := ai.serviceAt(k); svc != nil {
		return Target{Kind: TargetService, Service: svc, Port: port}
	}
	if e := ai.workloadAt(k); e != nil {
		return Target{Kind: TargetWorkload, Workload: e.w, Identities: e.identities, Port: port}
	}
	return Target{Kind: TargetUnknown, Port: port}
}
