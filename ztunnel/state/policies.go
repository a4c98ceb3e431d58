package state

import (
	"iter"
	"maps"
	"slices"

	"github.com/zmesh/zmesh/pkg/workloadapi/security"
)

// PolicySet is one immutable version of the authorization policies, keyed
// "<namespace>/<name>". Every policy delta that changes it publishes a new
// PolicySet, so consumers (authz) cache derived data per pointer.
//
// A policy whose only version ztunnel refused is in the set too, with its
// refusal (Refused): what the controller meant it to do is unknown, so it
// must be enforced fail-closed rather than left out, which would let an
// ALLOW's absence admit everyone.
type PolicySet struct {
	byKey   map[string]*security.Authorization
	refused map[string]error // keys of byKey whose message was refused
}

func newPolicySet() *PolicySet {
	return &PolicySet{byKey: map[string]*security.Authorization{}, refused: map[string]error{}}
}

func (p *PolicySet) clone() *PolicySet {
	return &PolicySet{byKey: maps.Clone(p.byKey), refused: maps.Clone(p.refused)}
}

// Refused returns why the policy with key was refused, nil when it was
// accepted or is unknown. A refused policy's message (Get, All) is what the
// controller sent; it may be nil or malformed.
func (p *PolicySet) Refused(key string) error {
	return p.refused[key]
}

// Get returns the policy with key "<namespace>/<name>", or nil (also for
// a refused policy sent without a message). Shared: do not modify.
func (p *PolicySet) Get(key string) *security.Authorization {
	return p.byKey[key]
}

// Len is the number of policies.
func (p *PolicySet) Len() int { return len(p.byKey) }

// All yields every policy with its key, in key order, refused ones
// included.
func (p *PolicySet) All() iter.Seq2[string, *security.Authorization] {
	return func(yield func(string, *security.Authorization) bool) {
		for _, k := range slices.Sorted(maps.Keys(p.byKey)) {
			if !yield(k, p.byKey[k]) {
				return
			}
		}
	}
}
