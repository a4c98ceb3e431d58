package state

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/zmesh/zmesh/pkg/workloadapi"
)

// wlEntry is an accepted workload with what lookups need precomputed.
type wlEntry struct {
	w *workloadapi.Workload
	// identities holds the workload's SPIFFE ID (one element).
	identities []string
	// addrs are the workload's addresses, unmapped.
	addrs []netip.Addr
}

func newWlEntry(w *workloadapi.Workload) *wlEntry {
	e := &wlEntry{w: w, identities: []string{Identity(w)}}
	for _, b := range w.GetAddresses() {
		if ip, ok := netip.AddrFromSlice(b); ok {
			e.addrs = append(e.addrs, ip.Unmap())
		}
	}
	return e
}

// indexedByAddr reports whether the workload appears in the by-address
// index; host-network workloads share the node's IP and do not (as in
// Istio's ztunnel).
func (e *wlEntry) indexedByAddr() bool {
	return e.w.GetNetworkMode() != workloadapi.NetworkMode_HOST_NETWORK
}

// addrIndex is the address half of a snapshot. Maps and the slices they
// hold are never modified once published.
type addrIndex struct {
	workloads map[string]*wlEntry            // by uid
	byAddr    map[addrKey][]*wlEntry         // ranked, best first
	services  map[string]*Service            // by "<ns>/<hostname>"
	byVIP     map[addrKey][]*Service         // ranked, best first
	members   map[string]map[string]struct{} // service key -> member uids
}

func newAddrIndex() *addrIndex {
	return &addrIndex{
		workloads: map[string]*wlEntry{},
		byAddr:    map[addrKey][]*wlEntry{},
		services:  map[string]*Service{},
		byVIP:     map[addrKey][]*Service{},
		members:   map[string]map[string]struct{}{},
	}
}

func (a *addrIndex) workloadAt(k addrKey) *wlEntry {
	if l := a.byAddr[k]; len(l) > 0 {
		return l[0]
	}
	return nil
}

func (a *addrIndex) serviceAt(k addrKey) *Service {
	if l := a.byVIP[k]; len(l) > 0 {
		return l[0]
	}
	return nil
}

// workloadRank orders workloads sharing an address: Pods first (not
// spoofable), then HBONE ones, then by uid — Istio ztunnel's preference
// with a deterministic tie-break.
func workloadRank(x, y *wlEntry) int {
	score := func(e *wlEntry) int {
		s := 0
		if strings.Contains(e.w.GetUid(), "//Pod/") {
			s += 2
		}
		if e.w.GetTunnelProtocol() == workloadapi.TunnelProtocol_HBONE {
			s++
		}
		return s
	}
	return cmp.Or(cmp.Compare(score(y), score(x)), cmp.Compare(x.w.GetUid(), y.w.GetUid()))
}

// serviceRank orders services sharing a VIP: canonical first, then by key.
func serviceRank(x, y *Service) int {
	cx, cy := 0, 0
	if x.Spec.GetCanonical() {
		cx = 1
	}
	if y.Spec.GetCanonical() {
		cy = 1
	}
	return cmp.Or(cmp.Compare(cy, cx), cmp.Compare(x.Key, y.Key))
}

// addrTxn builds the next addrIndex from the current one.
type addrTxn struct {
	n *addrIndex
	// ownedMembers marks member sets already copied in this transaction.
	ownedMembers map[string]bool
	// pending holds service specs upserted (non-nil) or removed (nil).
	pending map[string]*workloadapi.Service
	// dirty service keys need their *Service rebuilt.
	dirty map[string]struct{}
}

func newAddrTxn(old *addrIndex) *addrTxn {
	return &addrTxn{
		n: &addrIndex{
			workloads: maps.Clone(old.workloads),
			byAddr:    maps.Clone(old.byAddr),
			services:  maps.Clone(old.services),
			byVIP:     maps.Clone(old.byVIP),
			members:   maps.Clone(old.members),
		},
		ownedMembers: map[string]bool{},
		pending:      map[string]*workloadapi.Service{},
		dirty:        map[string]struct{}{},
	}
}

func (t *addrTxn) memberSet(key string) map[string]struct{} {
	if !t.ownedMembers[key] {
		t.n.members[key] = maps.Clone(t.n.members[key])
		if t.n.members[key] == nil {
			t.n.members[key] = map[string]struct{}{}
		}
		t.ownedMembers[key] = true
	}
	return t.n.members[key]
}

func (t *addrTxn) putWorkload(w *workloadapi.Workload) {
	t.removeWorkload(w.GetUid())
	e := newWlEntry(w)
	t.n.workloads[w.GetUid()] = e
	if e.indexedByAddr() {
		for _, ip := range e.addrs {
			k := addrKey{network: w.GetNetwork(), ip: ip}
			if slices.Contains(t.n.byAddr[k], e) {
				continue // the address is listed twice
			}
			l := append(slices.Clip(t.n.byAddr[k]), e)
			slices.SortFunc(l, workloadRank)
			t.n.byAddr[k] = l
		}
	}
	for key := range w.GetServices() {
		t.memberSet(key)[w.GetUid()] = struct{}{}
		t.dirty[key] = struct{}{}
	}
}

// removeWorkload drops a workload; it reports whether it existed.
func (t *addrTxn) removeWorkload(uid string) bool {
	prev := t.n.workloads[uid]
	if prev == nil {
		return false
	}
	delete(t.n.workloads, uid)
	if prev.indexedByAddr() {
		for _, ip := range prev.addrs {
			k := addrKey{network: prev.w.GetNetwork(), ip: ip}
			l := slices.DeleteFunc(slices.Clone(t.n.byAddr[k]), func(e *wlEntry) bool { return e == prev })
			if len(l) == 0 {
				delete(t.n.byAddr, k)
			} else {
				t.n.byAddr[k] = l
			}
		}
	}
	for key := range prev.w.GetServices() {
		set := t.memberSet(key)
		delete(set, uid)
		if len(set) == 0 {
			delete(t.n.members, key)
			delete(t.ownedMembers, key)
		}
		t.dirty[key] = struct{}{}
	}
	return true
}

func (t *addrTxn) putService(key string, s *workloadapi.Service) {
	t.pending[key] = s
	t.dirty[key] = struct{}{}
}

// removeService drops a service; it reports whether it existed.
func (t *addrTxn) removeService(key string) bool {
	spec, pending := t.pending[key]
	if (pending && spec == nil) || (!pending && t.n.services[key] == nil) {
		return false
	}
	t.pending[key] = nil
	t.dirty[key] = struct{}{}
	return true
}

// finish rebuilds the dirty services and returns the new index.
func (t *addrTxn) finish() *addrIndex {
	for key := range t.dirty {
		cur := t.n.services[key]
		var spec *workloadapi.Service
		if cur != nil {
			spec = cur.Spec
			t.unindexVIPs(cur)
		}
		if p, ok := t.pending[key]; ok {
			spec = p
		}
		if spec == nil {
			delete(t.n.services, key)
			continue
		}
		svc := buildService(key, spec, t.n.members[key], t.n.workloads)
		t.n.services[key] = svc
		for _, na := range spec.GetAddresses() {
			ip, _ := netip.AddrFromSlice(na.GetAddress())
			k := keyOf(na.GetNetwork(), ip)
			if slices.Contains(t.n.byVIP[k], svc) {
				continue // the address is listed twice
			}
			l := append(slices.Clip(t.n.byVIP[k]), svc)
			slices.SortFunc(l, serviceRank)
			t.n.byVIP[k] = l
		}
	}
	return t.n
}

func (t *addrTxn) unindexVIPs(svc *Service) {
	for _, na := range svc.Spec.GetAddresses() {
		ip, _ := netip.AddrFromSlice(na.GetAddress())
		k := keyOf(na.GetNetwork(), ip)
		l := slices.DeleteFunc(slices.Clone(t.n.byVIP[k]), func(s *Service) bool { return s.Key == svc.Key })
		if len(l) == 0 {
			delete(t.n.byVIP, k)
		} else {
			t.n.byVIP[k] = l
		}
	}
}
