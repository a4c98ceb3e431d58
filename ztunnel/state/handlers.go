package state

import (
	"fmt"

	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/workloadapi/security"
	"github.com/zmesh/zmesh/pkg/xds"
)

// AddressHandler returns the xds.Handler for type
// type.googleapis.com/istio.workload.Address (workloadapi.AddressTypeURL).
// Upserts are validated one by one; rejected ones keep their previous
// version. Removals name a workload uid or a service "<ns>/<hostname>";
// unknown names (e.g. on-demand keys) are ignored.
func (s *State) AddressHandler() xds.Handler {
	return xds.HandlerFunc(s.handleAddress)
}

// AuthorizationHandler returns the xds.Handler for type
// type.googleapis.com/istio.security.Authorization
// (security.AuthorizationTypeURL). Removals name "<ns>/<name>". A rejected
// upsert keeps the policy's last accepted version; a policy with none is
// kept as refused (PolicySet.Refused) and enforced fail-closed.
func (s *State) AuthorizationHandler() xds.Handler {
	return xds.HandlerFunc(s.handleAuthorization)
}

func (s *State) handleAddress(d xds.Delta) []xds.Rejection {
	s.writeMu.Lock()
	old := s.cur.Load()
	t := newAddrTxn(old.addr)
	var rejected []xds.Rejection
	changed := false
	// Removals first, so that a name both removed and upserted ends present.
	for _, name := range d.Removals {
		if t.removeWorkload(name) || t.removeService(name) {
			changed = true
			continue
		}
		s.log.Debug("address removal of unknown name ignored", "name", name)
	}
	for _, u := range d.Upserts {
		if err := s.upsertAddress(t, u); err != nil {
			s.log.Warn("address rejected", "name", u.Name, "version", u.Version, "error", err)
			rejected = append(rejected, xds.Rejection{Name: u.Name, Err: err})
			continue
		}
		changed = true
	}
	if changed {
		s.cur.Store(&snapshot{addr: t.finish(), pol: old.pol})
	}
	s.writeMu.Unlock()
	if changed {
		s.log.Debug("address delta applied", "upserts", len(d.Upserts)-len(rejected), "removals", len(d.Removals), "rejected", len(rejected))
		s.notify()
	}
	return rejected
}

func (s *State) upsertAddress(t *addrTxn, u xds.Upsert) error {
	w, svc, err := workloadapi.ValidateAddress(u.Name, u.Message)
	if err != nil {
		return err
	}
	if w != nil {
		t.putWorkload(w)
	} else {
		t.putService(u.Name, svc)
	}
	return nil
}

func (s *State) handleAuthorization(d xds.Delta) []xds.Rejection {
	s.writeMu.Lock()
	old := s.cur.Load()
	next := old.pol.clone()
	var rejected []xds.Rejection
	changed := false
	for _, name := range d.Removals {
		if _, ok := next.byKey[name]; ok {
			delete(next.byKey, name)
			delete(next.refused, name)
			changed = true
			continue
		}
		s.log.Debug("authorization removal of unknown name ignored", "name", name)
	}
	for _, u := range d.Upserts {
		a, ok := u.Message.(*security.Authorization)
		var err error
		if !ok {
			err = fmt.Errorf("message is %T, want *security.Authorization: %w", u.Message, ErrInvalid)
		} else {
			err = validateAuthorization(u.Name, a)
		}
		if err != nil {
			s.log.Warn("authorization rejected", "name", u.Name, "version", u.Version, "error", err)
			rejected = append(rejected, xds.Rejection{Name: u.Name, Err: fmt.Errorf("authorization: %w", err)})
			// The last accepted version stays. Without one, the refused
			// message is kept to be enforced fail-closed.
			if _, have := next.byKey[u.Name]; !have || next.refused[u.Name] != nil {
				next.byKey[u.Name] = a
				next.refused[u.Name] = err
				changed = true
			}
			continue
		}
		next.byKey[u.Name] = a
		delete(next.refused, u.Name)
		changed = true
	}
	if changed {
		s.cur.Store(&snapshot{addr: old.addr, pol: next})
	}
	s.writeMu.Unlock()
	if changed {
		s.log.Debug("authorization delta applied", "upserts", len(d.Upserts)-len(rejected), "removals", len(d.Removals), "rejected", len(rejected))
		s.notify()
	}
	return rejected
}
