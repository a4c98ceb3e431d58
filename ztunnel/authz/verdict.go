package authz

import "net/netip"

// Conn describes an inbound connection to authorize.
type Conn struct {
	// SrcIdentity is the peer's SPIFFE ID
	// (spiffe://<td>/ns/<ns>/sa/<sa>), "" for a plaintext peer.
	SrcIdentity string
	SrcIP       netip.Addr
	DstIP       netip.Addr
	DstPort     uint16
}

// Reason says why a decision was reached. The values are stable, short and
// suitable as metric label values.
type Reason string

// Reasons of a Decision.
const (
	// ReasonDenyMatched: a DENY policy matched (Decision.Policy names it).
	ReasonDenyMatched Reason = "deny_policy_matched"
	// ReasonAllowMatched: an ALLOW policy matched (Decision.Policy names it).
	ReasonAllowMatched Reason = "allow_policy_matched"
	// ReasonNoAllowPolicy: no DENY matched and no ALLOW policy applies.
	ReasonNoAllowPolicy Reason = "no_allow_policy"
	// ReasonAllowNotMatched: ALLOW policies apply but none matched.
	ReasonAllowNotMatched Reason = "allow_policy_not_matched"
	// ReasonPolicyUnknown: the workload lists a policy ztunnel does not
	// have (Decision.Policy names it), so a connection the other policies
	// allow is denied. Live connections are not closed for it (Tracker):
	// they were admitted with the policy known.
	ReasonPolicyUnknown Reason = "policy_unknown"
)

// Decision is the outcome of evaluating a set of policies.
type Decision struct {
	Allowed bool
	// Policy is the deciding policy's "<namespace>/<name>" (the missing
	// one for ReasonPolicyUnknown), "" when the decision was made by
	// default (ReasonNoAllowPolicy, ReasonAllowNotMatched).
	Policy string
	Reason Reason
}

// Verdict is the result of Evaluate.
type Verdict struct {
	// Decision is the enforced decision: dry-run policies play no part.
	Decision
	// DryRunApplied is set when at least one dry-run policy applied.
	DryRunApplied bool
	// DryRun is the decision had dry-run policies been enforced as well
	// (meaningful only with DryRunApplied), for logs and metrics.
	DryRun Decision
}
