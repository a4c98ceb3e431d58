package proxy

import (
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/zmesh/zmesh/waypoint/config"
)

// backendCache holds the backends resolved against one configuration
// snapshot. Snapshots are immutable, so a backend resolved once serves
// every request that reads the same snapshot: a request no longer walks
// the service's endpoints and builds their maps. A new snapshot starts a
// new cache.
type backendCache struct {
	snap *config.Snapshot
	m    sync.Map // backendKey -> *backend
}

// backendKey is everything resolve reads besides the snapshot.
type backendKey struct {
	name      string
	service   *config.Service
	port      config.ServicePort
	workload  *config.Workload
	authority netip.AddrPort
}

// backends caches resolve per snapshot.
type backends struct {
	cur atomic.Pointer[backendCache]
}

// get returns the cached backend for st and name, or resolves and caches
// it. A backend is shared by concurrent requests and never modified after
// resolve returns it.
func (bs *backends) get(st *state, name string, resolve func() (*backend, bool)) (*backend, bool) {
	c := bs.cur.Load()
	if c == nil || c.snap != st.snap {
		fresh := &backendCache{snap: st.snap}
		if bs.cur.CompareAndSwap(c, fresh) {
			c = fresh
		} else if c = bs.cur.Load(); c == nil || c.snap != st.snap {
			return resolve() // a request on an older snapshot: don't cache
		}
	}
	k := backendKey{name: name, service: st.down.Service, port: st.down.Port, workload: st.down.Workload, authority: st.down.Authority}
	if b, ok := c.m.Load(k); ok {
		return b.(*backend), true
	}
	b, ok := resolve()
	if !ok {
		return nil, false
	}
	actual, _ := c.m.LoadOrStore(k, b)
	return actual.(*backend), true
}
