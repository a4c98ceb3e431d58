package xdsserver

import (
	"fmt"
	"sync"
)

// typeStore holds the published resources of one type.
type typeStore struct {
	entries map[string]*entry // by name
	aliases map[string]string // alias -> name
}

// resolve maps an on-demand key (a name or an alias) to its entry, or nil.
func (ts *typeStore) resolve(key string) *entry {
	if ts == nil {
		return nil
	}
	if e := ts.entries[key]; e != nil {
		return e
	}
	if name, ok := ts.aliases[key]; ok {
		return ts.entries[name]
	}
	return nil
}

func (ts *typeStore) get(name string) *entry {
	if ts == nil {
		return nil
	}
	return ts.entries[name]
}

// store is the published state of every type.
//
// Writers (update, upsert, remove) are serialised by writeMu and do their
// expensive work (encoding, hashing, diffing) holding only writeMu, reading
// the maps without mu since no one else writes them; they take mu for
// writing only to apply the computed changes. Readers hold mu for reading.
type store struct {
	writeMu sync.Mutex
	seen    map[string]struct{} // update's scratch set; guarded by writeMu
	mu      sync.RWMutex
	types   map[string]*typeStore // guarded by mu (and writeMu for writes)
}

func newStore() *store {
	return &store{types: make(map[string]*typeStore)}
}

// typeLocked returns the store of typeURL; the caller holds mu (any mode)
// or writeMu. Nil when nothing of that type was ever written.
func (s *store) typeLocked(typeURL string) *typeStore {
	return s.types[typeURL]
}

// update replaces the full set of typeURL and returns the names whose
// version changed, appeared or disappeared. On error nothing is applied.
func (s *store) update(typeURL string, rs []Resource) ([]string, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.seen == nil {
		s.seen = make(map[string]struct{}, len(rs))
	}
	seen := s.seen
	defer clear(seen)
	changed, err := s.diff("update", typeURL, rs, seen)
	if err != nil {
		return nil, err
	}
	var removed []string
	if ts := s.types[typeURL]; ts != nil {
		for name := range ts.entries {
			if _, ok := seen[name]; !ok {
				removed = append(removed, name)
			}
		}
	}
	s.apply(typeURL, changed, removed)
	return changedNames(changed, removed), nil
}

// upsert adds or replaces the given resources, leaving others alone.
func (s *store) upsert(typeURL string, rs []Resource) ([]string, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	changed, err := s.diff("upsert", typeURL, rs, make(map[string]struct{}, len(rs)))
	if err != nil {
		return nil, err
	}
	s.apply(typeURL, changed, nil)
	return changedNames(changed, nil), nil
}

// diff encodes the resources whose content differs from what the store
// holds and returns them as new entries, recording every name in seen. It
// changes nothing visible to streams; the caller holds writeMu.
func (s *store) diff(op, typeURL string, rs []Resource, seen map[string]struct{}) ([]*entry, error) {
	ts := s.types[typeURL]
	var changed []*entry
	var enc encoder
	for _, r := range rs {
		if _, dup := seen[r.Name]; dup {
			return nil, fmt.Errorf("%s %s: %w: duplicate name %q", op, typeURL, errInvalidResource, r.Name)
		}
		seen[r.Name] = struct{}{}
		old := ts.get(r.Name)
		if old != nil && old.sameSource(r) {
			continue
		}
		version, err := enc.encode(typeURL, r)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", op, typeURL, err)
		}
		if old != nil && old.version == string(version[:]) {
			// Same content in a new message: remember the pointer so
			// passing it again skips the encoding.
			old.src = r.Body
			continue
		}
		changed = append(changed, enc.newEntry(typeURL, r, version))
	}
	return changed, nil
}

// remove deletes the named resources; unknown names are ignored.
func (s *store) remove(typeURL string, names []string) []string {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	ts := s.types[typeURL]
	var removed []string
	for _, n := range names {
		if ts.get(n) != nil {
			removed = append(removed, n)
		}
	}
	s.apply(typeURL, nil, removed)
	return removed
}

// apply writes computed changes; the caller holds writeMu.
func (s *store) apply(typeURL string, changed []*entry, removed []string) {
	if len(changed)+len(removed) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ts := s.types[typeURL]
	if ts == nil {
		ts = &typeStore{entries: make(map[string]*entry), aliases: make(map[string]string)}
		s.types[typeURL] = ts
	}
	for _, name := range removed {
		ts.dropAliases(ts.entries[name])
		delete(ts.entries, name)
	}
	for _, e := range changed {
		ts.dropAliases(ts.entries[e.name])
		ts.entries[e.name] = e
		for _, a := range e.aliases {
			ts.aliases[a] = e.name
		}
	}
}

// dropAliases removes the aliases that still point at e.
func (ts *typeStore) dropAliases(e *entry) {
	if e == nil {
		return
	}
	for _, a := range e.aliases {
		if ts.aliases[a] == e.name {
			delete(ts.aliases, a)
		}
	}
}

func changedNames(changed []*entry, removed []string) []string {
	out := make([]string, 0, len(changed)+len(removed))
	for _, e := range changed {
		out = append(out, e.name)
	}
	return append(out, removed...)
}
