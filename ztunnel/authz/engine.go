package authz

import (
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/zmesh/zmesh/pkg/workloadapi"
	"github.com/zmesh/zmesh/pkg/workloadapi/security"
	"github.com/zmesh/zmesh/ztunnel/state"
)

// Engine evaluates connections against the policies of a State. It
// compiles each published state.PolicySet once, lazily, on the first
// evaluation that sees it. Safe for concurrent use.
type Engine struct {
	st  *state.State
	log *slog.Logger

	// mu serialises compilation; cur is read without it.
	mu  sync.Mutex
	cur atomic.Pointer[policySet]
}

// NewEngine returns an Engine over st. log may be nil.
func NewEngine(st *state.State, log *slog.Logger) *Engine {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Engine{st: st, log: log}
}

// policySet is the compiled form of one state.PolicySet. Immutable.
type policySet struct {
	src   *state.PolicySet
	byKey map[string]*policy
	// byNS holds, per namespace with NAMESPACE-scoped policies, those and
	// the GLOBAL ones; global holds the GLOBAL ones alone. Lists are in key
	// order.
	byNS   map[string]*scoped
	global *scoped
}

// scoped is the DENY and ALLOW policies that apply by scope.
type scoped struct {
	deny, allow []*policy
}

func (s *scoped) add(p *policy) {
	if p.deny {
		s.deny = append(s.deny, p)
	} else {
		s.allow = append(s.allow, p)
	}
}

// compiled returns the compiled form of the state's current policies.
func (e *Engine) compiled() *policySet {
	src := e.st.Policies()
	if ps := e.cur.Load(); ps != nil && ps.src == src {
		return ps
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	// Recompile from the latest set (never older than src), reusing the
	// policies whose resource did not change.
	src = e.st.Policies()
	prev := e.cur.Load()
	if prev != nil && prev.src == src {
		return prev
	}
	ps := &policySet{src: src, byKey: make(map[string]*policy, src.Len()), byNS: map[string]*scoped{}, global: &scoped{}}
	var nsScoped []*policy
	for key, a := range src.All() {
		var p *policy
		if prev != nil {
			if old := prev.byKey[key]; old != nil && old.src == a {
				p = old
			}
		}
		refusal := src.Refused(key)
		switch {
		case p != nil:
		case refusal != nil:
			p = refusedPolicy(key, a)
			e.log.Warn("authorization policy refused; enforcing it fail-closed", "policy", key, "deny", p.deny, "error", refusal)
		default:
			var err error
			p, err = compile(a)
			if err != nil {
				e.log.Error("authorization policy failed to compile; enforcing it fail-closed", "policy", key, "error", err)
			}
		}
		ps.byKey[key] = p
		switch p.scope {
		case security.Scope_GLOBAL:
			ps.global.add(p)
		case security.Scope_NAMESPACE:
			nsScoped = append(nsScoped, p)
		}
	}
	for _, p := range nsScoped {
		s := ps.byNS[p.ns]
		if s == nil {
			s = &scoped{}
			ps.byNS[p.ns] = s
		}
		s.add(p)
	}
	for _, s := range ps.byNS {
		s.deny = mergeByKey(ps.global.deny, s.deny)
		s.allow = mergeByKey(ps.global.allow, s.allow)
	}
	e.cur.Store(ps)
	e.log.Debug("authorization policies compiled", "policies", len(ps.byKey), "namespaces", len(ps.byNS))
	return ps
}

func mergeByKey(a, b []*policy) []*policy {
	res := make([]*policy, 0, len(a)+len(b))
	res = append(append(res, a...), b...)
	slices.SortFunc(res, func(x, y *policy) int { return strings.Compare(x.key, y.key) })
	return res
}

// Evaluate decides whether connection c may reach workload dst under the
// current policies. dst nil means an unknown destination: only GLOBAL
// policies apply (the proxy normally refuses such connections anyway). It
// does not allocate.
func (e *Engine) Evaluate(c Conn, dst *workloadapi.Workload) Verdict {
	return e.compiled().evaluate(c, dst)
}

// tally accumulates one decision (enforced or dry-run).
type tally struct {
	deny, allow *policy
	anyAllow    bool
}

func (t *tally) needs(p *policy) bool {
	if t.deny != nil {
		return false
	}
	return p.deny || t.allow == nil
}

func (t *tally) record(p *policy) {
	if p.deny {
		t.deny = p
	} else {
		t.allow = p
	}
}

func (t *tally) decision() Decision {
	switch {
	case t.deny != nil:
		return Decision{Allowed: false, Policy: t.deny.key, Reason: ReasonDenyMatched}
	case !t.anyAllow:
		return Decision{Allowed: true, Reason: ReasonNoAllowPolicy}
	case t.allow != nil:
		return Decision{Allowed: true, Policy: t.allow.key, Reason: ReasonAllowMatched}
	}
	return Decision{Allowed: false, Reason: ReasonAllowNotMatched}
}

// evaluation is the state of one Evaluate call; it lives on the stack.
type evaluation struct {
	enforced, dryRun tally
	dryApplied       bool
	peer             peer
	conn             Conn
	// unknown is the first of the workload's listed policies that the set
	// does not have, "" when it has them all.
	unknown string
}

func (ev *evaluation) consider(p *policy) {
	if p.dryRun {
		ev.dryApplied = true
	}
	if !p.deny {
		ev.dryRun.anyAllow = true
		if !p.dryRun {
			ev.enforced.anyAllow = true
		}
	}
	needEnforced := !p.dryRun && ev.enforced.needs(p)
	needDryRun := ev.dryRun.needs(p)
	if !needEnforced && !needDryRun {
		return
	}
	if !p.matches(&ev.peer, &ev.conn) {
		return
	}
	if needEnforced {
		ev.enforced.record(p)
	}
	if needDryRun {
		ev.dryRun.record(p)
	}
}

// listed returns the compiled policy for a name of the workload's
// authorization_policies, or nil when it already applies by scope (so no
// policy is counted twice) or is unknown; known is false for the latter.
func (ps *policySet) listed(key string, dst *workloadapi.Workload) (p *policy, known bool) {
	p = ps.byKey[key]
	if p == nil {
		return nil, false
	}
	if p.scope == security.Scope_GLOBAL || (p.scope == security.Scope_NAMESPACE && p.ns == dst.GetNamespace()) {
		return nil, true
	}
	return p, true
}

func (ps *policySet) evaluate(c Conn, dst *workloadapi.Workload) Verdict {
	ev := evaluation{peer: parsePeer(c.SrcIdentity), conn: c}
	ev.conn.SrcIP = c.SrcIP.Unmap()
	ev.conn.DstIP = c.DstIP.Unmap()
	sc := ps.global
	if dst != nil {
		if s := ps.byNS[dst.GetNamespace()]; s != nil {
			sc = s
		}
	}
	// Resolve the workload's listed policies once, on the stack.
	var buf [maxListedOnStack]*policy
	listed := buf[:0]
	names := dst.GetAuthorizationPolicies()
	overflow := names
	for i, k := range names {
		if len(listed) == cap(listed) {
			overflow = names[i:]
			break
		}
		overflow = nil
		p, known := ps.listed(k, dst)
		if p != nil {
			listed = append(listed, p)
		} else if !known && ev.unknown == "" {
			ev.unknown = k
		}
	}
	// DENY first, so the deciding DENY is found before any ALLOW is
	// evaluated; consider is cheap once a tally is settled.
	for _, p := range sc.deny {
		ev.consider(p)
	}
	for _, p := range listed {
		if p.deny {
			ev.consider(p)
		}
	}
	for _, k := range overflow {
		p, known := ps.listed(k, dst)
		if p != nil && p.deny {
			ev.consider(p)
		} else if !known && ev.unknown == "" {
			ev.unknown = k
		}
	}
	for _, p := range sc.allow {
		ev.consider(p)
	}
	for _, p := range listed {
		if !p.deny {
			ev.consider(p)
		}
	}
	for _, k := range overflow {
		if p, _ := ps.listed(k, dst); p != nil && !p.deny {
			ev.consider(p)
		}
	}
	return Verdict{Decision: ev.decide(&ev.enforced), DryRunApplied: ev.dryApplied, DryRun: ev.decide(&ev.dryRun)}
}

// decide is t's decision, except that a connection the known policies
// would let through is denied while the workload lists a policy ztunnel
// does not have: it may be a DENY, or the ALLOW that admits it may be the
// only one.
func (ev *evaluation) decide(t *tally) Decision {
	d := t.decision()
	if d.Allowed && ev.unknown != "" {
		return Decision{Allowed: false, Policy: ev.unknown, Reason: ReasonPolicyUnknown}
	}
	return d
}

// maxListedOnStack bounds the listed policies resolved once per
// evaluation; names beyond it are looked up on each pass.
const maxListedOnStack = 32
