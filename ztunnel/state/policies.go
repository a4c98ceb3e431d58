package state

import (
	"iter"
	"maps"
	"slices"

	"github.com/zmesh/zmesh/pkg/workloadapi/security"
)

// PolicySet is one immutable version of the authorization policies, keyed
// "<namespace>/<name>". Every accepted policy delta publishes a new
// PolicySet, so consumers (authz) cache derived data per pointer.
type PolicySet struct {
	byKey map[string]*security.Authorization
}

func newPolicySet() *PolicySet {
	return &PolicySet{byKey: map[string]*security.Authorization{}}
}

func (p *PolicySet) clone() *PolicySet {
	return &PolicySet{byKey: maps.Clone(p.byKey)}
}

// Get returns the policy with key "<namespace>/<name>", or nil. Shared: do
// not modify.
func (p *PolicySet) Get(key string) *security.Authorization {
	return p.byKey[key]
}

// Len is the number of policies.
func (p *PolicySet) Len() int { return len(p.byKey) }

// All yields every policy with its key, in key order.
func (p *PolicySet) All() iter.Seq2[string, *security.Authorization] {
	return func(yield func(string, *security.Authorization) bool) {
		for _, k := range slices.Sorted(maps.Keys(p.byKey)) {
			if !yield(k, p.byKey[k]) {
				return
			}
		}
	}
}
